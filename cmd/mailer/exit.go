package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/gomailer/mailer"
)

// Exit codes from sysexits.h, which callers of sendmail read.
const (
	exUsage       = 64 // the command line is wrong
	exDataErr     = 65 // the message or an address is malformed
	exNoInput     = 66 // a file to read is missing or unreadable
	exNoUser      = 67 // the server does not know a recipient
	exNoHost      = 68 // the server's name does not resolve
	exUnavailable = 69 // the server refused for good; sysexits.h's catch-all
	exIOErr       = 74 // a file could not be written
	exTempFail    = 75 // try again later
	exProtocol    = 76 // the server spoke something else than expected
	exNoPerm      = 77 // the login was refused
	exConfig      = 78 // a profile, option or password source is wrong
)

// exitError is a failure ready for the user: one line and an exit code.
type exitError struct {
	code int
	msg  string
}

// Error returns the line printed after "mailer: ".
func (e *exitError) Error() string { return e.msg }

// usageErrorf, configErrorf, dataErrorf and inputErrorf make an exitError
// with EX_USAGE, EX_CONFIG, EX_DATAERR and EX_NOINPUT.
func usageErrorf(format string, a ...any) error {
	return &exitError{code: exUsage, msg: fmt.Sprintf(format, a...)}
}

func configErrorf(format string, a ...any) error {
	return &exitError{code: exConfig, msg: fmt.Sprintf(format, a...)}
}

func dataErrorf(format string, a ...any) error {
	return &exitError{code: exDataErr, msg: fmt.Sprintf(format, a...)}
}

func inputErrorf(format string, a ...any) error {
	return &exitError{code: exNoInput, msg: fmt.Sprintf(format, a...)}
}

// explain turns an error from the library into one line that says what
// failed (what: "sending to smtp.example.com:587"), the server's reply and
// the likely fix, with the sysexits.h code a caller of sendmail expects.
func explain(what string, err error) *exitError {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee
	}
	code, fix := classify(err)
	msg := oneLine(err)
	if what != "" {
		msg = what + ": " + msg
	}
	if fix != "" && !strings.Contains(msg, "--security") {
		msg += "; " + fix
	}
	return &exitError{code: code, msg: msg}
}

// classify picks the exit code and the advice for err.
func classify(err error) (int, string) {
	var (
		recipients *mailer.RecipientsError
		reply      *mailer.SMTPError
		proxyErr   *mailer.ProxyError
		dnsErr     *net.DNSError
		hostErr    x509.HostnameError
		authority  x509.UnknownAuthorityError
		invalid    x509.CertificateInvalidError
		verify     *tls.CertificateVerificationError
		alert      tls.AlertError
	)
	switch {
	case errors.Is(err, mailer.ErrOutcomeUnknown):
		return exTempFail, "the message may have been delivered: check before sending it again"
	case errors.As(err, &recipients):
		code := recipientsCode(recipients)
		if code == exTempFail {
			return code, "the server asks to try again later"
		}
		return code, "check the addresses"
	case errors.As(err, &proxyErr):
		switch {
		case errors.Is(err, mailer.ErrProxyAuth):
			return exNoPerm, "check the user and password in the --proxy URL"
		case errors.Is(err, mailer.ErrProxyUnreachable):
			return exTempFail, "check the proxy's address in --proxy"
		}
		return exUnavailable, "check that the proxy may connect to the server's host and port"
	case errors.As(err, &reply):
		return replyCode(reply)
	case errors.As(err, &hostErr):
		return exUnavailable, "the certificate is for another name: give --server the name in the certificate"
	case errors.As(err, &authority):
		return exUnavailable, "the certificate is not signed by a known authority: give its CA with --tls-ca FILE"
	case errors.As(err, &invalid):
		return exUnavailable, "the server's certificate is expired or not valid yet"
	case errors.As(err, &verify):
		return exUnavailable, "the server's certificate did not verify; a private CA goes in --tls-ca FILE"
	case errors.As(err, &alert):
		return exUnavailable, "the server refused the TLS handshake: check --encryption and --ciphers"
	case errors.Is(err, mailer.ErrTLSRequired):
		return exUnavailable, "if the port speaks TLS from the start (465) use --security tls; --security starttls-optional would send in clear text"
	case errors.Is(err, mailer.ErrInsecureAuth):
		return exConfig, "use --security starttls or tls, or --insecure-auth on a network you trust"
	case errors.Is(err, mailer.ErrAuthUnavailable):
		return exNoPerm, "choose --auth from the mechanisms the server offers (mailer check shows them); many servers offer AUTH only after STARTTLS"
	case errors.Is(err, mailer.ErrMessageTooLarge):
		return exDataErr, "make the message or its attachments smaller"
	case errors.Is(err, mailer.ErrInvalidAddress), errors.Is(err, mailer.ErrHeaderInjection):
		return exDataErr, ""
	case errors.Is(err, mailer.ErrSMTPUTF8Unsupported):
		return exDataErr, "the server cannot take a non-ASCII address"
	case errors.Is(err, mailer.ErrReplyTooLarge):
		return exProtocol, "this does not look like an SMTP server"
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return exNoHost, "check the name given to --server"
	case errors.Is(err, syscall.ECONNREFUSED):
		return exTempFail, "nothing listens there: check --server and --port"
	case errors.Is(err, context.DeadlineExceeded):
		return exTempFail, "the server did not answer in time; a wrong port or security mode (--security tls for 465, starttls for 587) looks like this too"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return exTempFail, ""
	}
	// sysexits.h: EX_UNAVAILABLE is also the catch-all for "something you
	// wanted to do doesn't work, but you don't know why".
	return exUnavailable, ""
}

// recipientsCode is EX_TEMPFAIL when every refusal is temporary, EX_NOUSER
// when a mailbox is unknown, else EX_UNAVAILABLE.
func recipientsCode(e *mailer.RecipientsError) int {
	temporary, unknown := true, false
	for _, r := range e.Rejected {
		var reply *mailer.SMTPError
		if !errors.As(r.Err, &reply) || !reply.Temporary() {
			temporary = false
		}
		if reply != nil && (reply.Code == 550 || reply.Code == 551 || reply.Code == 553 || reply.EnhancedCode[1] == 1) {
			unknown = true
		}
	}
	switch {
	case temporary:
		return exTempFail
	case unknown:
		return exNoUser
	}
	return exUnavailable
}

// replyCode gives the exit code and advice for a refused command.
func replyCode(e *mailer.SMTPError) (int, string) {
	if e.Temporary() {
		return exTempFail, "the server asks to try again later"
	}
	switch {
	case strings.HasPrefix(e.Command, "AUTH"):
		return exNoPerm, "check --username and the password"
	case e.Command == "greeting":
		return exUnavailable, "the server refuses connections from here"
	case e.Command == "MAIL" && (e.Code == 530 || e.EnhancedCode == mailer.EnhancedCode{5, 7, 0}):
		return exNoPerm, "the server wants a login first: give --username and a password"
	case e.Command == "MAIL":
		return exUnavailable, "the server does not let this account send from that address: check --sender"
	case e.Code == 552 || e.EnhancedCode == mailer.EnhancedCode{5, 3, 4}:
		return exDataErr, "the message is larger than the server accepts"
	case e.Command == "RCPT" && e.EnhancedCode[1] == 1:
		return exNoUser, "check the address"
	case e.EnhancedCode[1] == 7:
		return exUnavailable, "the server's policy refused the message"
	}
	return exUnavailable, ""
}

// cliNames translates the library's Go names in its advice to the flags
// that set them here.
var cliNames = strings.NewReplacer(
	"SecuritySTARTTLSOptional", "--security starttls-optional",
	"SecuritySTARTTLS", "--security starttls",
	"SecurityTLS", "--security tls",
	"SecurityNone", "--security none",
	"WithInsecureAuth", "--insecure-auth",
)

// oneLine renders err on a single line without the library's "mailer: "
// prefixes and with flag names for the library's option names.
func oneLine(err error) string {
	return cliNames.Replace(flatten(strings.ReplaceAll(err.Error(), "mailer: ", "")))
}

// flatten puts multi-line server text on one line.
func flatten(s string) string {
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", " / ")
}

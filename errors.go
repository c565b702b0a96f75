package mailer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// Sentinel errors, usable with errors.Is. The errors the package returns wrap
// them with the detail of what went wrong.
var (
	// ErrTLSRequired means the security mode requires TLS and the server did
	// not offer it (no STARTTLS) or the upgrade failed. Nothing was sent.
	ErrTLSRequired = errors.New("mailer: TLS required but not available")
	// ErrAuthUnavailable means credentials were configured but no mechanism
	// is both offered by the server and allowed by the caller.
	ErrAuthUnavailable = errors.New("mailer: no usable authentication mechanism")
	// ErrInsecureAuth means a mechanism that reveals the password or token
	// (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER) would have run over an
	// unencrypted connection.
	ErrInsecureAuth = errors.New("mailer: refusing to send a password over an unencrypted connection")
	// ErrInvalidAddress means an e-mail address failed validation.
	ErrInvalidAddress = errors.New("mailer: invalid address")
	// ErrHeaderInjection means a CR, LF or NUL was found where it would
	// let the caller's data forge header fields or SMTP commands.
	ErrHeaderInjection = errors.New("mailer: CR, LF or NUL in a header field or address")
	// ErrSMTPUTF8Unsupported means an address needs the SMTPUTF8 extension
	// (a non-ASCII local part) and the server does not offer it.
	ErrSMTPUTF8Unsupported = errors.New("mailer: server does not support SMTPUTF8")
	// ErrMessageTooLarge means the message is larger than the SIZE the
	// server advertised, known before anything was sent.
	ErrMessageTooLarge = errors.New("mailer: message exceeds the server's size limit")
	// ErrOutcomeUnknown means the connection was lost after the whole
	// message was sent and before the server's reply: the server may have
	// accepted it. Such a send is never retried automatically.
	ErrOutcomeUnknown = errors.New("mailer: connection lost before the server confirmed the message")
	// ErrClosed means the Connection was closed.
	ErrClosed = errors.New("mailer: connection closed")
	// ErrExtensionUnsupported means the message asks for an SMTP
	// extension the server does not announce (DSN, REQUIRETLS), or that
	// cannot be used on this connection (REQUIRETLS without verified TLS).
	// Nothing was sent.
	ErrExtensionUnsupported = errors.New("mailer: the server does not support what the message asks for")
	// ErrReplyTooLarge means a server or proxy sent a reply longer than the
	// client reads (see docs/connection.md for the limits); the connection
	// was dropped.
	ErrReplyTooLarge = errors.New("mailer: reply exceeds the client's limits")
)

// maxServerText bounds the server-supplied text kept in an error or a log
// line.
const maxServerText = 512

// clip makes server-supplied text safe for an error or a log line: control
// and non-printing characters (and invalid UTF-8) are escaped, newlines
// excepted, and the text is cut to maxServerText bytes with an ellipsis.
func clip(s string) string {
	var b strings.Builder
	for i, r := range s {
		if b.Len() >= maxServerText {
			b.WriteString("...")
			break
		}
		switch {
		case r == utf8.RuneError && len(s[i:]) > 0 && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\n' || r == ' ' || strconv.IsPrint(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

// EnhancedCode is an RFC 3463 enhanced status code such as 5.1.1.
// The zero value means the server sent none.
type EnhancedCode [3]int

// String returns the code in dotted form, or "" for the zero value.
func (c EnhancedCode) String() string {
	if c == (EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// SMTPError is a reply from the server that refused a command.
type SMTPError struct {
	// Code is the three-digit reply code.
	Code int
	// EnhancedCode is the RFC 3463 status code, zero if the server sent none.
	EnhancedCode EnhancedCode
	// Message is the reply text, lines joined by "\n".
	Message string
	// Command is the command that drew the reply, without its arguments
	// ("MAIL", "RCPT", "DATA", "AUTH PLAIN", "greeting" for the banner).
	Command string

	final bool // the reply to the end of the message (dot or BDAT LAST)
}

// finalReply marks err, if it is a server's reply, as the reply to the
// end of the message, which is never retried automatically.
func finalReply(err error) error {
	var se *SMTPError
	if errors.As(err, &se) {
		se.final = true
	}
	return err
}

// Error returns the reply in the form "mailer: MAIL: 550 5.1.1 text",
// followed by a hint for well-known replies.
func (e *SMTPError) Error() string {
	var b strings.Builder
	b.WriteString("mailer: ")
	if e.Command != "" {
		b.WriteString(e.Command)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%d", e.Code)
	if s := e.EnhancedCode.String(); s != "" {
		b.WriteString(" ")
		b.WriteString(s)
	}
	if e.Message != "" {
		b.WriteString(" ")
		b.WriteString(e.Message)
	}
	if h := e.hint(); h != "" {
		b.WriteString(" (")
		b.WriteString(h)
		b.WriteString(")")
	}
	return b.String()
}

// Temporary reports whether the reply is a transient failure (4yz): the
// same command may succeed later.
func (e *SMTPError) Temporary() bool {
	return e.Code >= 400 && e.Code < 500
}

// hint explains the replies whose text rarely tells the user what to do.
func (e *SMTPError) hint() string {
	if e.Command == "EHLO" || e.Command == "HELO" {
		return "a server that checks the client's name wants this host's fully qualified name: set WithLocalName"
	}
	if !strings.HasPrefix(e.Command, "AUTH") {
		return ""
	}
	switch {
	case e.EnhancedCode == EnhancedCode{5, 7, 139} || e.EnhancedCode == EnhancedCode{5, 7, 3}:
		return "SMTP AUTH is disabled for this account or tenant"
	case e.EnhancedCode == EnhancedCode{5, 7, 9} || e.Code == 534:
		return "the provider requires an application-specific password or OAuth2"
	case e.Code == 535 || e.EnhancedCode == EnhancedCode{5, 7, 8}:
		return "wrong user name or password; some providers need an app password"
	}
	return ""
}

// RejectedRecipient is one recipient the server refused.
type RejectedRecipient struct {
	// Address is the envelope address as sent in RCPT TO.
	Address string
	// Err is the reason, usually an *SMTPError.
	Err error
}

// RecipientsError reports the recipients the server refused. Nothing was
// sent when it is returned: with partial delivery, refusals are reported in
// SendResult.Rejected instead, unless every recipient was refused.
type RecipientsError struct {
	Rejected []RejectedRecipient
}

// Error lists every refused address with the server's reply.
func (e *RecipientsError) Error() string {
	var b strings.Builder
	b.WriteString("mailer: ")
	if len(e.Rejected) == 1 {
		b.WriteString("recipient refused: ")
	} else {
		fmt.Fprintf(&b, "%d recipients refused: ", len(e.Rejected))
	}
	for i, r := range e.Rejected {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "<%s>: %s", r.Address, strings.TrimPrefix(r.Err.Error(), "mailer: "))
	}
	b.WriteString(" (nothing sent)")
	return b.String()
}

// Unwrap returns each recipient's error, so that errors.As finds the
// *SMTPError of the first refusal.
func (e *RecipientsError) Unwrap() []error {
	errs := make([]error, len(e.Rejected))
	for i, r := range e.Rejected {
		errs[i] = r.Err
	}
	return errs
}

// replyError converts an error from go-smtp into the package's form: a
// server reply becomes an *SMTPError naming cmd; anything else is returned
// unchanged.
func replyError(cmd string, err error) error {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &SMTPError{
			Code:         se.Code,
			EnhancedCode: EnhancedCode(se.EnhancedCode),
			Message:      clip(se.Message),
			Command:      cmd,
		}
	}
	return err
}

// newReply makes an *SMTPError from a reply the package read itself,
// taking an RFC 3463 enhanced code off the front of the text if present.
func newReply(cmd string, code int, msg string) *SMTPError {
	msg = clip(msg)
	e := &SMTPError{Code: code, Message: msg, Command: cmd}
	first, rest, ok := strings.Cut(msg, " ")
	if !ok {
		return e
	}
	var ec EnhancedCode
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return e
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return e
		}
		ec[i] = n
	}
	if ec[0] != code/100 {
		return e
	}
	e.EnhancedCode, e.Message = ec, rest
	return e
}

// handshakeError is a failed TLS handshake. It matches ErrTLSRequired, and
// its text is the TLS error's, cut and escaped: certificate names come
// from the server.
type handshakeError struct {
	what, addr string
	err        error
}

func (e *handshakeError) Error() string {
	return fmt.Sprintf("mailer: %s with %s failed: %s", e.what, e.addr, clip(e.err.Error()))
}

func (e *handshakeError) Unwrap() []error { return []error{ErrTLSRequired, e.err} }

// clippedError shows a wrapped error's text through clip, for errors whose
// text may carry what a server or proxy sent.
type clippedError struct{ err error }

func (e *clippedError) Error() string { return clip(e.err.Error()) }
func (e *clippedError) Unwrap() error { return e.err }

// timeoutError is returned when a configured timeout (not the caller's
// context) expires. It matches context.DeadlineExceeded with errors.Is, like
// the caller's own deadline would.
type timeoutError struct {
	what string
	err  error
}

func (e *timeoutError) Error() string {
	return "mailer: " + e.what
}

func (e *timeoutError) Unwrap() []error { return []error{context.DeadlineExceeded, e.err} }

// Timeout reports true, for net.Error-style checks.
func (e *timeoutError) Timeout() bool { return true }

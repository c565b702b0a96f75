package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
)

// RetryPolicy says how often and how patiently a send is tried again after
// a failure that provably delivered nothing (see WithRetry).
type RetryPolicy struct {
	// Attempts is the number of tries, the first included: 1 means no
	// retry.
	Attempts int
	// Delay is the pause before the first retry, doubled before each
	// further one; 0 means one second.
	Delay time.Duration
	// MaxDelay caps the pause; 0 means 30 seconds.
	MaxDelay time.Duration
}

// WithRetry makes Send, SendRaw and SendAll try a message again, up to
// p.Attempts times in all, when a failure provably delivered nothing:
//
//   - the connection was refused, or dropped before or during the greeting,
//     EHLO, STARTTLS, the TLS handshake or AUTH (a certificate that fails
//     verification is not retried);
//   - a temporary (4xx) reply to AUTH, MAIL or DATA, or to RCPT when every
//     refusal was temporary; with partial delivery, only the recipients
//     that got a 4xx are sent again, and the result lists every recipient
//     once;
//   - a 421 at any point before the end of the message, or the connection
//     lost while the message was being sent, before its end;
//   - a pooled session found dead (that one is replaced even without
//     WithRetry).
//
// Nothing is retried after the end of the message (the final dot, or BDAT
// LAST) was sent: a lost reply there is ErrOutcomeUnknown, and a 4xx reply
// there is returned; never on a 5xx reply; never when the caller's reader
// failed. SendRaw retries once the message was read only if the reader is
// an io.Seeker. The pause before retry n is Delay*2^(n-1), capped at
// MaxDelay, of which a random half is taken off (jitter, so that many
// clients do not come back at once); the send's context bounds it all.
//
// Retries are off by default (Attempts 1): a retry holds the caller for
// seconds, which a request handler rarely wants; a service that must not
// lose a message retries durably through an outbox. Attempts below 1 and
// negative delays are errors.
func WithRetry(p RetryPolicy) Option {
	return func(c *config) error {
		if p.Attempts < 1 || p.Delay < 0 || p.MaxDelay < 0 {
			return fmt.Errorf("mailer: retry policy needs Attempts >= 1 and delays >= 0, got %+v", p)
		}
		if p.Delay == 0 {
			p.Delay = time.Second
		}
		if p.MaxDelay == 0 {
			p.MaxDelay = 30 * time.Second
		}
		c.retry = p
		return nil
	}
}

// backoff returns the pause before retry n (from 1).
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.Delay
	for i := 1; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	return d - rand.N(d/2+1)
}

// pause waits before retry n, or until ctx ends.
func (p RetryPolicy) pause(ctx context.Context, n int) error {
	t := time.NewTimer(p.backoff(n))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// IsTemporary reports whether err, returned by this package, is a failure
// that may go away if the same message is sent again later: a 4xx reply,
// recipients all refused with 4xx, a connection that failed or timed out.
// It is false for nil, for 5xx replies, invalid input, configuration and
// certificate errors, ErrClosed, a cancelled context and ErrOutcomeUnknown
// (the message may have been delivered: sending it again may deliver it
// twice; the caller decides). docs/errors.md has the whole table.
func IsTemporary(err error) bool {
	if err == nil || errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrClosed) ||
		errors.Is(err, context.Canceled) {
		return false
	}
	var re *RecipientsError
	if errors.As(err, &re) {
		for _, r := range re.Rejected {
			if !IsTemporary(r.Err) {
				return false
			}
		}
		return len(re.Rejected) > 0
	}
	var se *SMTPError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	var rd *readerError
	if errors.As(err, &rd) {
		return false
	}
	var he *handshakeError
	if errors.As(err, &he) {
		return !certificateProblem(he.err) && transient(he.err)
	}
	for _, permanent := range []error{ErrInvalidAddress, ErrHeaderInjection, ErrMessageTooLarge,
		ErrSMTPUTF8Unsupported, ErrExtensionUnsupported, ErrTLSRequired, ErrAuthUnavailable,
		ErrInsecureAuth, ErrReplyTooLarge, ErrProxyAuth, ErrProxyRefused} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	if errors.Is(err, ErrProxyUnreachable) || errors.Is(err, ErrDestinationUnreachable) {
		return true
	}
	return transient(err)
}

// transient reports whether err is a network failure or a timeout.
func transient(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() ||
		errors.As(err, &oe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// certificateProblem reports whether a TLS handshake failed on the
// server's certificate, which trying again will not change.
func certificateProblem(err error) bool {
	var (
		ve *tls.CertificateVerificationError
		ha x509.HostnameError
		ua x509.UnknownAuthorityError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &ve) || errors.As(err, &ha) || errors.As(err, &ua) || errors.As(err, &ci)
}

// retryable reports whether a send that failed with err may be tried
// again automatically: IsTemporary, and provably nothing delivered (the
// rules in WithRetry's documentation).
func retryable(err error) bool {
	var se *SMTPError
	if errors.As(err, &se) && (se.final || se.Command == "BDAT" && se.Code != 421) {
		return false
	}
	return IsTemporary(err)
}

// readerError is a failure of the caller's reader while the message was
// being sent: the connection was dropped so nothing is delivered, and
// sending again would read a reader that failed.
type readerError struct{ err error }

func (e *readerError) Error() string {
	return "mailer: reading the message failed; connection dropped, nothing was sent: " + e.err.Error()
}

func (e *readerError) Unwrap() error { return e.err }

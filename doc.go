// Package mailer sends e-mail over SMTP: configure a Connection once, then
// send many messages through it, from one goroutine or many.
//
//	c, err := mailer.NewConnection("smtp.example.com:587",
//		mailer.WithCredentials("user", "secret"))
//	if err != nil { ... }
//	defer c.Close()
//	res, err := c.Send(ctx, &mailer.Message{
//		From:    mailer.Recipient{Name: "Muflone", Address: "muflone@example.com"},
//		To:      []mailer.Recipient{{Address: "foo@example.com"}},
//		Subject: "Test e-mail",
//		Text:    "Hello world!",
//	})
//
// # Sessions
//
// A Connection opens an SMTP session (dial, greeting, EHLO, TLS,
// authentication) when it first needs one and keeps it for the next
// message: by default one session carries every message, and concurrent
// sends wait their turn (WithMaxConnections allows more). A session that
// idled is checked with NOOP before it is used again, and one that turns out
// to be dead before its transaction started is replaced transparently. A
// 421 reply retires a session. Close says QUIT.
//
// # Security
//
// The default, SecurityAuto, is implicit TLS on port 465 and required
// STARTTLS on every other port: a server that does not offer STARTTLS is an
// error (ErrTLSRequired) before anything is sent, never a silent downgrade.
// SecuritySTARTTLSOptional is the opportunistic mode, SecurityNone clear
// text. Certificates are verified against the server's name.
//
// WithEncryption accepts mumailer's protocol names (Python's ssl.PROTOCOL_*
// names). In mumailer they chose only the TLS version, and use_ssl or use_tls
// chose implicit TLS or STARTTLS; here they choose the mode too:
//
//	""                   SecurityNone
//	"SSLv23"             SecurityTLS (implicit TLS, any version both sides share)
//	"TLS", "TLS_CLIENT"  SecuritySTARTTLS
//	"TLSv1"              SecuritySTARTTLS with exactly TLS 1.0 (likewise TLSv1_1, TLSv1_2, TLSv1_3)
//
// A later option overrides an earlier one, so mumailer's use_ssl=True with
// "TLSv1_2" is WithEncryption("TLSv1_2", "") followed by
// WithSecurity(SecurityTLS).
//
// # Timeouts and cancellation
//
// Every method that touches the network takes a context.Context; cancelling
// it interrupts a blocked read or write at once and retires the session.
// WithConnectTimeout bounds the dial and proxy handshake,
// WithGreetingTimeout the 220 banner, WithTimeout each reply, and
// WithDataTimeout the reply after the message (RFC 5321's 10 minutes by
// default). A configured timeout that expires matches
// context.DeadlineExceeded with errors.Is, as the caller's own deadline does.
//
// # Errors
//
// A refused command is an *SMTPError (code, enhanced code, text and the
// command that drew it; Temporary for 4yz). Refused recipients are a
// *RecipientsError naming each one; by default one refusal cancels the
// transaction (WithPartialDelivery sends to the others). The sentinels
// (ErrTLSRequired, ErrAuthUnavailable, ErrInsecureAuth, ErrInvalidAddress,
// ErrHeaderInjection, ErrSMTPUTF8Unsupported, ErrMessageTooLarge,
// ErrOutcomeUnknown, ErrClosed) work with errors.Is. ErrOutcomeUnknown means
// the connection was lost after the whole message was sent and before the
// server confirmed it: the message may have been delivered, so it is never
// retried automatically.
//
// # Transcript
//
// WithLogger logs the protocol at Debug level and events at Info;
// WithDebugWriter writes a plain transcript like smtplib's set_debuglevel.
// Authentication exchanges are always redacted and message data is
// summarised as a byte count.
//
// The data of every message is normalised so that a bare CR or LF never
// reaches the server (no SMTP smuggling), and a message whose body fails to
// read is abandoned by dropping the connection, never committed truncated.
//
// # Testing
//
// The package [github.com/gomailer/mailer/mailertest] runs an in-process
// SMTP server, with TLS, authentication and fault injection, for testing
// code that sends mail.
package mailer

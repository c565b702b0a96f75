package mailertest

import (
	"fmt"
	"strings"
	"time"
)

// An Option configures a Server.
type Option func(*config)

type config struct {
	starttls     bool
	implicitTLS  bool
	users        map[string]string
	tokens       map[string]string // token -> user
	mechanisms   []string
	insecureAuth bool
	requireAuth  bool
	maxSize      int64
	smtputf8     bool
	replies      map[string]reply // lower-case address -> reply
	faults       []Fault
	noPipelining bool
	noChunking   bool
	dsn          bool
	requireTLS   bool
	maxPerConn   int
	idleTimeout  time.Duration
	rateN        int
	ratePer      time.Duration
}

type reply struct {
	code     int
	enhanced [3]int
	text     string
}

// WithSTARTTLS offers STARTTLS, with a certificate for localhost and
// 127.0.0.1 signed by the CA that Server.CertPool returns.
func WithSTARTTLS() Option { return func(c *config) { c.starttls = true } }

// WithImplicitTLS speaks TLS from the first byte, as on port 465.
func WithImplicitTLS() Option { return func(c *config) { c.implicitTLS = true } }

// WithUser accepts name and password through PLAIN, LOGIN and CRAM-MD5.
// With TLS configured, AUTH is offered only once the connection is
// encrypted, unless WithInsecureAuth is given.
func WithUser(name, password string) Option {
	return func(c *config) {
		if c.users == nil {
			c.users = map[string]string{}
		}
		c.users[name] = password
	}
}

// WithToken accepts the OAuth2 bearer token for user through XOAUTH2 and
// OAUTHBEARER.
func WithToken(user, token string) Option {
	return func(c *config) {
		if c.tokens == nil {
			c.tokens = map[string]string{}
		}
		c.tokens[token] = user
	}
}

// WithAuthMechanisms restricts the mechanisms offered to mechs, in that
// order.
func WithAuthMechanisms(mechs ...string) Option {
	return func(c *config) { c.mechanisms = mechs }
}

// WithInsecureAuth offers AUTH before TLS.
func WithInsecureAuth() Option { return func(c *config) { c.insecureAuth = true } }

// WithRequireAuth answers MAIL with 530 5.7.0 until the client has
// authenticated.
func WithRequireAuth() Option { return func(c *config) { c.requireAuth = true } }

// WithMaxMessageSize announces SIZE n and refuses larger messages with 552.
func WithMaxMessageSize(n int64) Option { return func(c *config) { c.maxSize = n } }

// WithSMTPUTF8 announces SMTPUTF8 (RFC 6531).
func WithSMTPUTF8() Option { return func(c *config) { c.smtputf8 = true } }

// WithRecipientReply answers RCPT TO:<addr> with the given reply instead of
// accepting it, for example 550, "5.1.1", "no such user" or 451, "4.3.0",
// "try later". An enhanced code that does not parse is left out.
func WithRecipientReply(addr string, code int, enhanced, text string) Option {
	return func(c *config) {
		if c.replies == nil {
			c.replies = map[string]reply{}
		}
		r := reply{code: code, text: text}
		var a, b, d int
		if _, err := fmt.Sscanf(enhanced, "%d.%d.%d", &a, &b, &d); err == nil {
			r.enhanced = [3]int{a, b, d}
		}
		c.replies[strings.ToLower(addr)] = r
	}
}

// WithoutPipelining leaves PIPELINING (RFC 2920) out of the EHLO reply.
// Commands that arrive together are still answered in order.
func WithoutPipelining() Option { return func(c *config) { c.noPipelining = true } }

// WithoutChunking leaves CHUNKING (RFC 3030, the BDAT command) out of the
// EHLO reply.
func WithoutChunking() Option { return func(c *config) { c.noChunking = true } }

// WithFault makes the server misbehave as f says. Several faults may be
// given; the first that matches a command applies.
func WithFault(f Fault) Option {
	return func(c *config) { c.faults = append(c.faults, f) }
}

// WithDSN announces DSN (RFC 3461) and accepts its MAIL and RCPT
// parameters; Commands shows them as sent.
func WithDSN() Option { return func(c *config) { c.dsn = true } }

// WithREQUIRETLS announces REQUIRETLS (RFC 8689) on TLS sessions and
// records it in Message.RequireTLS.
func WithREQUIRETLS() Option { return func(c *config) { c.requireTLS = true } }

// WithMaxMessagesPerConnection answers the MAIL of message n+1 on a
// connection with "421 4.7.0 Too many messages on this connection" and
// closes it, as providers that cap messages per connection do.
func WithMaxMessagesPerConnection(n int) Option { return func(c *config) { c.maxPerConn = n } }

// WithIdleTimeout closes a connection on which the client sent nothing for
// d, after "421 4.4.2 Idle timeout", as servers do.
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }

// WithRateLimit answers MAIL with "451 4.7.1 Rate limit exceeded, try again
// later" while n messages have already started within the last per, over
// all connections.
func WithRateLimit(n int, per time.Duration) Option {
	return func(c *config) { c.rateN, c.ratePer = n, per }
}

package mailer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/emersion/go-sasl"
	"golang.org/x/net/proxy"
)

// Defaults for the timeouts. RFC 5321 4.5.3.2 recommends minutes for every
// reply; a client that sends interactively wants to hear sooner that a
// server is stuck, so only the final reply keeps the RFC's allowance.
const (
	defaultConnectTimeout  = 30 * time.Second
	defaultGreetingTimeout = 30 * time.Second
	defaultTimeout         = time.Minute
	// RFC 5321 4.5.3.2.6: 10 minutes for the reply after the final dot.
	defaultDataTimeout = 10 * time.Minute
)

// An Option configures a Connection. Options are applied in order by
// NewConnection; a later option overrides an earlier one that sets the same
// thing.
type Option func(*config) error

// config is everything the options set. It is read-only once NewConnection
// returns, so sessions share it without locking.
type config struct {
	host string
	port int

	security       Security
	tlsConfig      *tls.Config
	skipVerify     bool
	minTLS, maxTLS uint16
	cipherSuites   []uint16

	connectTimeout   time.Duration
	greetingTimeout  time.Duration
	timeout          time.Duration
	dataTimeout      time.Duration
	healthCheckAfter time.Duration
	minDataRate      int64

	localName    string
	sourceAddr   *net.TCPAddr
	dialer       proxy.ContextDialer
	proxy        *Proxy
	proxyFromEnv bool

	auth authConfig

	logger      *slog.Logger
	debug       io.Writer
	debugStamps bool

	maxConns        int
	partialDelivery bool
	pipelineDepth   int

	idleTimeout time.Duration
	maxMessages int
	maxLifetime time.Duration
	rate        *rateConfig
	retry       RetryPolicy
	dkim        []DKIM
}

func newConfig(server string, opts []Option) (*config, error) {
	cfg := &config{
		connectTimeout:   defaultConnectTimeout,
		greetingTimeout:  defaultGreetingTimeout,
		timeout:          defaultTimeout,
		dataTimeout:      defaultDataTimeout,
		healthCheckAfter: defaultHealthCheckAfter,
		idleTimeout:      defaultIdleTimeout,
		retry:            RetryPolicy{Attempts: 1},
		minDataRate:      defaultMinDataRate,
		maxConns:         1,
		pipelineDepth:    defaultPipelineDepth,
	}
	host, port, err := splitServer(server)
	if err != nil {
		return nil, err
	}
	cfg.host = host
	for _, opt := range opts {
		if err := opt(cfg); err != nil {
			return nil, err
		}
	}
	if port != 0 {
		if cfg.port != 0 && cfg.port != port {
			return nil, fmt.Errorf("mailer: server %q names port %d but WithPort says %d", server, port, cfg.port)
		}
		cfg.port = port
	}
	if cfg.port == 0 {
		cfg.port = cfg.security.defaultPort()
	}
	if cfg.minTLS != 0 && cfg.maxTLS != 0 && cfg.minTLS > cfg.maxTLS {
		return nil, fmt.Errorf("mailer: TLS minimum version %s is above the maximum %s",
			tls.VersionName(cfg.minTLS), tls.VersionName(cfg.maxTLS))
	}
	if err := cfg.auth.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// partial resolves a message's delivery policy against the Connection's.
func (c *config) partial(p DeliveryPolicy) bool {
	switch p {
	case DeliveryPartial:
		return true
	case DeliveryAllOrNothing:
		return false
	}
	return c.partialDelivery
}

// hostName is the machine's name when it is fully qualified (has a dot
// and is a valid domain), else "".
var hostName = sync.OnceValue(func() string {
	h, err := os.Hostname()
	h = strings.TrimSuffix(h, ".")
	if err != nil || !strings.Contains(h, ".") || !validDomain(h) {
		return ""
	}
	return h
})

// splitServer accepts "host" or "host:port" (with brackets for IPv6).
func splitServer(server string) (string, int, error) {
	if server == "" {
		return "", 0, errors.New("mailer: empty server name")
	}
	if strings.ContainsAny(server, "\r\n\x00 /") {
		return "", 0, fmt.Errorf("mailer: invalid server name %q", server)
	}
	host, portStr, err := net.SplitHostPort(server)
	if err != nil {
		// No port: a bare host name, IPv4 or IPv6 address.
		return strings.Trim(server, "[]"), 0, nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("mailer: invalid port in server %q", server)
	}
	if host == "" {
		return "", 0, fmt.Errorf("mailer: no host in server %q", server)
	}
	return host, port, nil
}

// WithPort sets the server's TCP port. Without it the port comes from the
// server string ("host:port") or the security mode: 465 for SecurityTLS, 25
// for SecurityNone and 587 otherwise. A port outside 1-65535 is an error.
func WithPort(port int) Option {
	return func(c *config) error {
		if port < 1 || port > 65535 {
			return fmt.Errorf("mailer: port %d out of range 1-65535", port)
		}
		c.port = port
		return nil
	}
}

// WithSecurity sets how the connection is protected; see Security. The
// default is SecurityAuto.
func WithSecurity(s Security) Option {
	return func(c *config) error {
		if s < SecurityAuto || s > SecurityTLS {
			return fmt.Errorf("mailer: unknown security mode %d", int(s))
		}
		c.security = s
		return nil
	}
}

// WithTLSConfig sets the TLS configuration to start from, for a custom CA
// pool (RootCAs) or a client certificate. It is cloned; ServerName defaults
// to the SMTP server's host name, and the versions and cipher suites set by
// other options take precedence over the ones in cfg.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) error {
		if cfg == nil {
			return errors.New("mailer: WithTLSConfig(nil)")
		}
		c.tlsConfig = cfg.Clone()
		return nil
	}
}

// WithInsecureSkipVerify turns off certificate verification: anyone on the
// path can then read and change the mail and the password. Use it only
// against a test server; WithTLSConfig with the server's CA is the safe way
// to trust a private certificate.
func WithInsecureSkipVerify() Option {
	return func(c *config) error {
		c.skipVerify = true
		return nil
	}
}

// WithTLSVersions sets the lowest and highest TLS versions to negotiate
// (tls.VersionTLS12 and so on); 0 leaves that bound at crypto/tls's default.
func WithTLSVersions(minVersion, maxVersion uint16) Option {
	return func(c *config) error {
		for _, v := range []uint16{minVersion, maxVersion} {
			if v != 0 && (v < tls.VersionTLS10 || v > tls.VersionTLS13) {
				return fmt.Errorf("mailer: unknown TLS version 0x%04x", v)
			}
		}
		c.minTLS, c.maxTLS = minVersion, maxVersion
		return nil
	}
}

// WithEncryption configures security the way mumailer's set_encryption and
// Aspose's SmtpClient do: protocol is one of "", "SSLv23", "TLS",
// "TLS_CLIENT", "TLSv1", "TLSv1_1", "TLSv1_2", "TLSv1_3" (see the package
// documentation for what each means) and ciphers is an OpenSSL cipher
// string ("HIGH:!aNULL", "ECDHE+AESGCM:@STRENGTH", "ALL:@SECLEVEL=1"), a
// list of suite names in OpenSSL ("ECDHE-RSA-AES128-GCM-SHA256") or IANA
// form, or "" for Go's defaults; docs/encryption.md tells what maps onto
// crypto/tls. An unknown name is an error. Keywords leave out the suites
// crypto/tls deems insecure; naming one is an error unless
// WithUnsafeEncryption is used instead.
func WithEncryption(protocol, ciphers string) Option {
	return func(c *config) error { return c.setEncryption(protocol, ciphers, false) }
}

// WithUnsafeEncryption is WithEncryption that also accepts the cipher
// suites crypto/tls deems insecure (RSA key exchange, RC4, 3DES,
// CBC-SHA256), for servers that offer nothing better. Like Aspose's
// set_supported_encryption_unsafe, its name is the warning.
func WithUnsafeEncryption(protocol, ciphers string) Option {
	return func(c *config) error { return c.setEncryption(protocol, ciphers, true) }
}

// WithConnectTimeout bounds establishing the TCP connection, proxy handshake
// included. The default is 30 seconds.
func WithConnectTimeout(d time.Duration) Option {
	return durationOption("connect", d, func(c *config) *time.Duration { return &c.connectTimeout })
}

// WithGreetingTimeout bounds the wait for the server's 220 greeting (and
// the TLS handshake of implicit TLS). The default is 30 seconds.
func WithGreetingTimeout(d time.Duration) Option {
	return durationOption("greeting", d, func(c *config) *time.Duration { return &c.greetingTimeout })
}

// WithTimeout bounds the wait for each command's reply and each write of
// message data. The default is one minute.
func WithTimeout(d time.Duration) Option {
	return durationOption("command", d, func(c *config) *time.Duration { return &c.timeout })
}

// WithDataTimeout bounds the wait for the server's reply after the whole
// message was sent. The default is RFC 5321's 10 minutes, since the server
// may be scanning the message.
func WithDataTimeout(d time.Duration) Option {
	return durationOption("data", d, func(c *config) *time.Duration { return &c.dataTimeout })
}

// WithMinDataRate sets the slowest average rate, in bytes per second, at
// which the server must take message data once the command timeout
// (WithTimeout) has passed since the data began: a server that reads a
// trickle fails the send with a timeout instead of holding the session for
// as long as the context allows. The default is 16 KiB/s; 0 turns the
// check off, leaving only the per-write timeout. A negative rate is an
// error.
func WithMinDataRate(bytesPerSecond int64) Option {
	return func(c *config) error {
		if bytesPerSecond < 0 {
			return fmt.Errorf("mailer: negative minimum data rate %d", bytesPerSecond)
		}
		c.minDataRate = bytesPerSecond
		return nil
	}
}

func durationOption(name string, d time.Duration, field func(*config) *time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("mailer: %s timeout must be positive, got %v", name, d)
		}
		*field(c) = d
		return nil
	}
}

// WithLocalName sets the name the client gives in EHLO/HELO. The default is
// the machine's fully qualified name when its host name has a dot, else the
// address literal of the connection's local end ("[192.0.2.1]", RFC 5321
// 4.1.4), or "localhost" through a proxy, whose server sees another
// address. Relays that check the name (smtp-relay.gmail.com refuses
// "localhost") want the sending host's public name.
func WithLocalName(name string) Option {
	return func(c *config) error {
		if name == "" || strings.IndexFunc(name, func(r rune) bool { return r == ' ' || unicode.IsControl(r) }) >= 0 {
			return fmt.Errorf("mailer: invalid local name %q", name)
		}
		c.localName = name
		return nil
	}
}

// WithSourceAddress binds outgoing connections to a local IP address, given
// as "192.0.2.1" or "192.0.2.1:0".
func WithSourceAddress(addr string) Option {
	return func(c *config) error {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			ip, err2 := netip.ParseAddr(addr)
			if err2 != nil {
				return fmt.Errorf("mailer: invalid source address %q", addr)
			}
			ap = netip.AddrPortFrom(ip, 0)
		}
		c.sourceAddr = net.TCPAddrFromAddrPort(ap)
		return nil
	}
}

// WithDialer makes connections with d instead of a net.Dialer, for a
// transport the package does not provide. A proxy set with WithProxy is
// reached through d. WithSourceAddress does not apply to d.
func WithDialer(d proxy.ContextDialer) Option {
	return func(c *config) error {
		if d == nil {
			return errors.New("mailer: WithDialer(nil)")
		}
		c.dialer = d
		return nil
	}
}

// WithProxy connects through p (see SOCKS5, SOCKS4, SOCKS4A, HTTPProxy,
// ProxyFromURL). TLS runs end to end with the SMTP server, and its
// certificate is checked against the SMTP server's name.
func WithProxy(p *Proxy) Option {
	return func(c *config) error {
		if p == nil {
			return errors.New("mailer: WithProxy(nil)")
		}
		c.proxy = p
		return nil
	}
}

// WithProxyFromEnvironment connects through the proxy named by ALL_PROXY
// (or all_proxy) unless NO_PROXY (or no_proxy) excludes the server. The
// variables are read when each connection is made.
func WithProxyFromEnvironment() Option {
	return func(c *config) error {
		c.proxyFromEnv = true
		return nil
	}
}

// WithCredentials authenticates with a user name and password, using the
// strongest mechanism that both the server offers and WithAuthMechanisms
// allows (SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN). PLAIN and
// LOGIN are refused over an unencrypted connection unless WithInsecureAuth
// is given.
func WithCredentials(username, password string) Option {
	return func(c *config) error {
		if strings.ContainsAny(username, "\r\n\x00") {
			return fmt.Errorf("%w: user name", ErrHeaderInjection)
		}
		c.auth.username, c.auth.password = username, password
		return nil
	}
}

// WithAuthMechanisms restricts authentication to the named mechanisms
// (AuthPlain, AuthCRAMMD5, ...), tried in the given order of preference.
// An unknown name is an error.
func WithAuthMechanisms(mechs ...string) Option {
	return func(c *config) error {
		c.auth.mechanisms = append([]string(nil), mechs...)
		return nil
	}
}

// WithTokenSource authenticates with OAuth2 bearer tokens from ts, through
// XOAUTH2 or OAUTHBEARER. A rejected token is refreshed and tried once more.
func WithTokenSource(ts TokenSource) Option {
	return func(c *config) error {
		if ts == nil {
			return errors.New("mailer: WithTokenSource(nil)")
		}
		c.auth.tokens = ts
		return nil
	}
}

// WithSASL authenticates with a mechanism of the caller's, made fresh for
// each session by newClient.
func WithSASL(newClient func() sasl.Client) Option {
	return func(c *config) error {
		if newClient == nil {
			return errors.New("mailer: WithSASL(nil)")
		}
		c.auth.custom = newClient
		return nil
	}
}

// WithInsecureAuth allows PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER over an
// unencrypted connection, where anyone on the path can read the password
// or token.
func WithInsecureAuth() Option {
	return func(c *config) error {
		c.auth.allowInsecure = true
		return nil
	}
}

// WithLogger logs connection events at Info level and the protocol
// transcript at Debug level, one record per line. Authentication exchanges
// are always redacted, and message contents are summarised, not logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("mailer: WithLogger(nil)")
		}
		c.logger = l
		return nil
	}
}

// WithDebugWriter writes the protocol transcript to w as plain text, one
// "C: " or "S: " line per protocol line, like smtplib's set_debuglevel; with
// timestamps each line starts with the time. Authentication exchanges are
// always redacted.
func WithDebugWriter(w io.Writer, timestamps bool) Option {
	return func(c *config) error {
		if w == nil {
			return errors.New("mailer: WithDebugWriter(nil)")
		}
		c.debug, c.debugStamps = w, timestamps
		return nil
	}
}

// WithMaxConnections lets up to n sessions run at once, for concurrent
// sends. The default is 1: every send reuses one SMTP connection, and
// concurrent sends wait their turn.
func WithMaxConnections(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("mailer: max connections must be at least 1, got %d", n)
		}
		c.maxConns = n
		return nil
	}
}

// WithPipelineDepth sets how many transactions SendAll keeps in flight on
// one session of a server that announces PIPELINING and CHUNKING; the
// default is 8. 1 still pipelines each transaction's commands, one message
// at a time. Less than 1 is an error.
func WithPipelineDepth(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("mailer: pipeline depth must be at least 1, got %d", n)
		}
		c.pipelineDepth = n
		return nil
	}
}

// WithPartialDelivery sends a message to the recipients the server accepted
// even when it refused others, which are reported in SendResult.Rejected.
// By default one refusal cancels the whole transaction.
func WithPartialDelivery() Option {
	return func(c *config) error {
		c.partialDelivery = true
		return nil
	}
}

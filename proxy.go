package mailer

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/proxy"
)

// maxProxyReply bounds an HTTP proxy's reply to CONNECT, headers included.
const maxProxyReply = 16 << 10

// Sentinel errors for a failed proxy hop, usable with errors.Is on a
// *ProxyError.
var (
	// ErrProxyUnreachable means the proxy itself could not be reached.
	ErrProxyUnreachable = errors.New("mailer: proxy unreachable")
	// ErrProxyAuth means the proxy refused the credentials.
	ErrProxyAuth = errors.New("mailer: proxy authentication refused")
	// ErrProxyRefused means the proxy refused to connect to the destination.
	ErrProxyRefused = errors.New("mailer: proxy refused the destination")
	// ErrDestinationUnreachable means the proxy could not reach the SMTP
	// server.
	ErrDestinationUnreachable = errors.New("mailer: destination unreachable through the proxy")
)

// Proxy is an intermediary the SMTP connection is made through: SOCKS4,
// SOCKS4a, SOCKS5 or HTTP CONNECT. Make one with SOCKS5, SOCKS4, SOCKS4A,
// HTTPProxy, HTTPSProxy or ProxyFromURL and pass it to WithProxy.
type Proxy struct {
	scheme     string // socks4, socks4a, socks5, socks5h, http, https
	addr       string
	user, pass string
	tlsConfig  *tls.Config // https only
}

// SOCKS5 returns a SOCKS5 proxy at addr ("host:port"), with
// username/password authentication unless user is empty. The SMTP
// server's name is resolved by the proxy.
func SOCKS5(addr, user, pass string) *Proxy {
	return &Proxy{scheme: "socks5h", addr: addr, user: user, pass: pass}
}

// SOCKS4 returns a SOCKS4 proxy at addr. The SMTP server's name is resolved
// locally, and SOCKS4 reaches IPv4 addresses only.
func SOCKS4(addr, userID string) *Proxy {
	return &Proxy{scheme: "socks4", addr: addr, user: userID}
}

// SOCKS4A returns a SOCKS4a proxy at addr, which resolves the SMTP server's
// name itself.
func SOCKS4A(addr, userID string) *Proxy {
	return &Proxy{scheme: "socks4a", addr: addr, user: userID}
}

// HTTPProxy returns an HTTP proxy at addr used with CONNECT, with Basic
// authentication unless user is empty.
func HTTPProxy(addr, user, pass string) *Proxy {
	return &Proxy{scheme: "http", addr: addr, user: user, pass: pass}
}

// HTTPSProxy is HTTPProxy over TLS to the proxy itself; tlsConfig (nil for
// the defaults) verifies the proxy's certificate.
func HTTPSProxy(addr, user, pass string, tlsConfig *tls.Config) *Proxy {
	return &Proxy{scheme: "https", addr: addr, user: user, pass: pass, tlsConfig: tlsConfig}
}

// ProxyFromURL parses a proxy URL: socks4://, socks4a://, socks5://
// (local name resolution), socks5h:// (the proxy resolves), http:// or
// https://, with credentials as user:password@. The port defaults to 1080
// for SOCKS, 8080 for http and 443 for https. The error never repeats the
// password.
func ProxyFromURL(raw string) (*Proxy, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("mailer: invalid proxy URL %q", redactURL(raw))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("mailer: proxy URL %q has a path, query or fragment", redactURL(raw))
	}
	p := &Proxy{scheme: strings.ToLower(u.Scheme), user: u.User.Username()}
	p.pass, _ = u.User.Password()
	port := u.Port()
	if n, err := strconv.Atoi(port); port != "" && (err != nil || n < 1 || n > 65535) {
		return nil, fmt.Errorf("mailer: proxy URL %q: port out of range", redactURL(raw))
	}
	switch p.scheme {
	case "socks4", "socks4a", "socks5", "socks5h":
		port = cmpOr(port, "1080")
	case "http":
		port = cmpOr(port, "8080")
	case "https":
		port = cmpOr(port, "443")
	default:
		return nil, fmt.Errorf("mailer: unsupported proxy scheme %q; use socks4, socks4a, socks5, socks5h, http or https", u.Scheme)
	}
	p.addr = net.JoinHostPort(u.Hostname(), port)
	return p, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// redactURL hides the password in a URL that may not parse.
func redactURL(raw string) string {
	at := strings.LastIndexByte(raw, '@')
	scheme := strings.Index(raw, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return raw
	}
	userinfo := raw[scheme+3 : at]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return raw[:scheme+3] + user + ":***" + raw[at:]
	}
	return raw
}

// String returns the proxy as a URL with the password replaced by "***".
func (p Proxy) String() string {
	u := url.URL{Scheme: p.scheme, Host: p.addr}
	if p.user != "" {
		if p.pass != "" {
			u.User = url.UserPassword(p.user, "***")
		} else {
			u.User = url.User(p.user)
		}
	}
	return strings.Replace(u.String(), "%2A%2A%2A", "***", 1)
}

// Format prints the proxy as String does, whatever the verb (%#v as
// mailer.Proxy("...")), so that no verb prints the password.
func (p Proxy) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprintf(f, "mailer.Proxy(%q)", p.String())
		return
	}
	_, _ = io.WriteString(f, p.String())
}

// ProxyError reports a failed connection through a proxy. Its Err wraps
// one of ErrProxyUnreachable, ErrProxyAuth, ErrProxyRefused and
// ErrDestinationUnreachable. It never holds the proxy's password.
type ProxyError struct {
	Proxy string // the proxy, as Proxy.String gives it
	Dest  string // the SMTP server's host:port
	Code  int    // the SOCKS reply code or HTTP status, 0 if none
	Err   error
}

// Error says which hop failed and why.
func (e *ProxyError) Error() string {
	s := fmt.Sprintf("mailer: connecting to %s through %s: %v", e.Dest, e.Proxy, e.Err)
	if e.Code != 0 {
		s += fmt.Sprintf(" (code %d)", e.Code)
	}
	return s
}

// Unwrap returns the cause.
func (e *ProxyError) Unwrap() error { return e.Err }

func (p *Proxy) fail(dest string, code int, kind error, detail error) error {
	err := kind
	if detail != nil {
		err = fmt.Errorf("%w: %w", kind, detail)
	}
	return &ProxyError{Proxy: p.String(), Dest: dest, Code: code, Err: err}
}

// dialer returns a dialer that reaches addresses through p, connecting to
// the proxy with forward. Every handshake honours the context.
func (p *Proxy) dialer(forward proxy.ContextDialer) proxy.ContextDialer {
	return dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := forward.DialContext(ctx, "tcp", p.addr)
		if errors.Is(ctx.Err(), context.Canceled) {
			// The caller gave up: no fault of the proxy's.
			if conn != nil {
				conn.Close()
			}
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, p.fail(addr, 0, ErrProxyUnreachable, err)
		}
		if p.scheme == "https" {
			cfg := p.tlsConfig.Clone()
			if cfg == nil {
				cfg = &tls.Config{}
			}
			if cfg.ServerName == "" {
				cfg.ServerName, _, _ = net.SplitHostPort(p.addr)
			}
			tc := tls.Client(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, p.fail(addr, 0, ErrProxyUnreachable, err)
			}
			conn = tc
		}
		out, err := p.handshake(ctx, conn, addr)
		if err != nil {
			conn.Close()
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, ctx.Err()
			}
			if ctx.Err() != nil || isTimeout(err) {
				return nil, p.fail(addr, 0, ErrProxyUnreachable, fmt.Errorf("no answer: %w", cmpErr(ctx.Err(), context.DeadlineExceeded)))
			}
			return nil, err
		}
		return out, nil
	})
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// dialFunc is a dialer made of a function; it has both methods that
// x/net/proxy's interfaces ask for.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// Dial is DialContext without a deadline; the package itself always
// calls DialContext.
func (f dialFunc) Dial(network, addr string) (net.Conn, error) {
	return f(context.Background(), network, addr)
}

// handshake asks the proxy, over conn, for a tunnel to addr.
func (p *Proxy) handshake(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	if p.scheme == "socks5" || p.scheme == "socks5h" {
		return p.socks5(ctx, conn, addr)
	}
	// The hand-written handshakes bound their I/O by the context.
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var out net.Conn
	var err error
	switch p.scheme {
	case "socks4", "socks4a":
		out, err = p.socks4(ctx, conn, addr)
	default:
		out, err = p.httpConnect(conn, addr)
	}
	if err != nil {
		return nil, err
	}
	if !stop() {
		// The context ended as the handshake finished: the connection
		// now has a past deadline and is no use.
		return nil, p.fail(addr, 0, ErrProxyUnreachable, ctx.Err())
	}
	conn.SetDeadline(time.Time{})
	return out, nil
}

// socks5Replies names the SOCKS5 reply codes as x/net/proxy's errors spell
// them: x/net/proxy reports a refusal only as text, so the code is found
// by its name.
var socks5Replies = map[string]int{
	"general SOCKS server failure": 1, "connection not allowed by ruleset": 2, "network unreachable": 3,
	"host unreachable": 4, "connection refused": 5, "TTL expired": 6, "command not supported": 7,
	"address type not supported": 8,
}

func (p *Proxy) socks5(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	var auth *proxy.Auth
	if p.user != "" {
		auth = &proxy.Auth{User: p.user, Password: p.pass}
	}
	if p.scheme == "socks5" {
		resolved, err := resolveHost(ctx, addr, false)
		if err != nil {
			return nil, p.fail(addr, 0, ErrDestinationUnreachable, err)
		}
		addr = resolved
	}
	// x/net/proxy dials the proxy itself: hand it the connection made.
	d, err := proxy.SOCKS5("tcp", p.addr, auth, dialFunc(func(context.Context, string, string) (net.Conn, error) { return conn, nil }))
	if err != nil {
		return nil, p.fail(addr, 0, ErrProxyRefused, err)
	}
	out, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", addr)
	if err == nil {
		return out, nil
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "authentication failed"), strings.Contains(msg, "no acceptable authentication methods"):
		return nil, p.fail(addr, 0, ErrProxyAuth, errors.New("the SOCKS5 proxy refused the credentials"))
	}
	for name, code := range socks5Replies {
		if strings.HasSuffix(msg, name) {
			kind := ErrProxyRefused
			if code >= 3 && code <= 6 {
				kind = ErrDestinationUnreachable
			}
			return nil, p.fail(addr, code, kind, errors.New(name))
		}
	}
	return nil, p.fail(addr, 0, ErrProxyRefused, &clippedError{err})
}

// resolveHost returns addr with its host resolved locally to an IP
// address (IPv4 only if v4).
func resolveHost(ctx context.Context, addr string, v4 bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if !v4 || ip.IP.To4() != nil {
			return net.JoinHostPort(ip.IP.String(), port), nil
		}
	}
	return "", fmt.Errorf("%s has no IPv4 address, and SOCKS4 reaches IPv4 only: use SOCKS4A or SOCKS5", host)
}

// socks4 speaks SOCKS4 and SOCKS4a, which x/net/proxy lacks (and no
// well-kept module provides).
func (p *Proxy) socks4(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	host, portStr, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, p.fail(addr, 0, ErrProxyRefused, err)
	}
	req := []byte{4, 1, byte(port >> 8), byte(port)}
	ip := net.ParseIP(host)
	switch {
	case ip != nil && ip.To4() == nil:
		return nil, p.fail(addr, 0, ErrProxyRefused, errors.New("SOCKS4 cannot reach an IPv6 address: use SOCKS5"))
	case ip != nil:
		req = append(req, ip.To4()...)
	case p.scheme == "socks4a":
		req = append(req, 0, 0, 0, 1)
	default:
		resolved, err := resolveHost(ctx, addr, true)
		if err != nil {
			return nil, p.fail(addr, 0, ErrDestinationUnreachable, err)
		}
		h, _, _ := net.SplitHostPort(resolved)
		req = append(req, net.ParseIP(h).To4()...)
	}
	req = append(append(req, p.user...), 0)
	if ip == nil && p.scheme == "socks4a" {
		req = append(append(req, host...), 0)
	}
	if _, err := conn.Write(req); err != nil {
		return nil, p.fail(addr, 0, ErrProxyUnreachable, err)
	}
	var reply [8]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return nil, p.fail(addr, 0, ErrProxyUnreachable, err)
	}
	switch code := int(reply[1]); code {
	case 90:
		return conn, nil
	case 92, 93:
		return nil, p.fail(addr, code, ErrProxyAuth, errors.New("the SOCKS4 proxy could not confirm the user ID (identd)"))
	default:
		return nil, p.fail(addr, code, ErrProxyRefused, errors.New("request rejected or failed"))
	}
}

// httpConnect asks an HTTP proxy for a tunnel with CONNECT; net/http has no
// client for it. Bytes that arrive with the proxy's reply (an early SMTP
// greeting) are kept for the caller.
func (p *Proxy) httpConnect(conn net.Conn, addr string) (net.Conn, error) {
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if p.user != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass)) + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return nil, p.fail(addr, 0, ErrProxyUnreachable, err)
	}
	// net/http reads a response of any size: the proxy's reply, headers
	// included, is read through a limit.
	lr := &io.LimitedReader{R: conn, N: maxProxyReply}
	br := bufio.NewReader(lr)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		if lr.N == 0 {
			return nil, p.fail(addr, 0, ErrProxyRefused, fmt.Errorf("%w: more than %d bytes of HTTP reply", ErrReplyTooLarge, maxProxyReply))
		}
		return nil, p.fail(addr, 0, ErrProxyUnreachable, &clippedError{err})
	}
	// The body is left unread: RFC 9110 9.3.6, a 2xx reply to CONNECT has
	// none whatever its header says, and after any other the connection
	// is dropped.
	status := errors.New(clip(resp.Status))
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
	case code == http.StatusProxyAuthRequired || code == http.StatusUnauthorized: // tinyproxy answers 401
		return nil, p.fail(addr, code, ErrProxyAuth, status)
	case code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		return nil, p.fail(addr, code, ErrDestinationUnreachable, status)
	default:
		return nil, p.fail(addr, code, ErrProxyRefused, status)
	}
	if n := br.Buffered(); n > 0 {
		early, _ := br.Peek(n)
		return &prefixConn{Conn: conn, prefix: append([]byte(nil), early...)}, nil
	}
	return conn, nil
}

// prefixConn returns prefix before reading from Conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// proxyDialer returns the dialer sessions connect with: base, through the
// configured proxy or the one ALL_PROXY names (unless NO_PROXY exempts the
// server).
func (c *config) proxyDialer(base proxy.ContextDialer) (proxy.ContextDialer, error) {
	if c.proxy != nil {
		return c.proxy.dialer(base), nil
	}
	if !c.proxyFromEnv {
		return base, nil
	}
	raw := cmpOr(os.Getenv("ALL_PROXY"), os.Getenv("all_proxy"))
	if raw == "" {
		return base, nil
	}
	p, err := ProxyFromURL(raw)
	if err != nil {
		return nil, fmt.Errorf("mailer: ALL_PROXY: %w", err)
	}
	// x/net/proxy's PerHost implements NO_PROXY's matching (hosts,
	// domains, IPs, CIDRs).
	ph := proxy.NewPerHost(dialFunc(p.dialer(base).DialContext), dialFunc(base.DialContext))
	ph.AddFromString(cmpOr(os.Getenv("NO_PROXY"), os.Getenv("no_proxy")))
	return ph, nil
}

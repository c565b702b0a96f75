package mailertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From       string   // MAIL FROM address
	To         []string // RCPT TO addresses, in order
	Data       []byte   // the message as received, dot-unstuffed, CRLF line ends
	Helo       string   // the name the client gave in EHLO or HELO
	TLS        bool     // the transaction ran over TLS
	AuthUser   string   // the authenticated user, "" if none
	UTF8       bool     // MAIL FROM carried SMTPUTF8
	Size       int64    // the SIZE parameter of MAIL FROM, 0 if none
	RequireTLS bool     // MAIL FROM carried REQUIRETLS
}

// Server is a running test server. Its methods are safe for concurrent use.
type Server struct {
	cfg    config
	ln     net.Listener
	smtp   *smtp.Server
	tlsCfg *tls.Config
	pool   *x509.CertPool
	done   chan struct{}

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever a message arrives
	messages []Message
	commands []string
	groups   []int // for each command, the socket read it arrived in
	nreads   int   // socket reads so far, all connections
	conns    int
	closed   bool
	live     []*conn     // every connection accepted, for Close
	starts   []time.Time // recent MAIL commands, for WithRateLimit
}

// NewServer starts a server on 127.0.0.1 with a port chosen by the system.
// Like httptest.NewServer, it panics if it cannot listen or make its
// certificate. Close it when done.
func NewServer(opts ...Option) *Server {
	s := &Server{done: make(chan struct{}), changed: make(chan struct{})}
	for _, o := range opts {
		o(&s.cfg)
	}
	if s.cfg.starttls || s.cfg.implicitTLS {
		cert, pool, err := newCertificate()
		if err != nil {
			panic("mailertest: making the certificate: " + err.Error())
		}
		s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.pool = pool
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("mailertest: listen: " + err.Error())
	}
	s.ln = ln
	s.smtp = smtp.NewServer(&backend{srv: s})
	s.smtp.Domain = "mailertest"
	// The connection wrapper does TLS and decides per session whether AUTH
	// is offered, so go-smtp itself never sees a *tls.Conn.
	s.smtp.AllowInsecureAuth = true
	s.smtp.EnableSMTPUTF8 = s.cfg.smtputf8
	s.smtp.MaxMessageBytes = s.cfg.maxSize
	s.smtp.EnableDSN = s.cfg.dsn
	s.smtp.EnableREQUIRETLS = s.cfg.requireTLS
	s.smtp.ReadTimeout = s.cfg.idleTimeout
	s.smtp.ErrorLog = log.New(io.Discard, "", 0)
	go s.smtp.Serve(&listener{Listener: ln, srv: s})
	return s
}

// Addr returns the server's address as "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Host returns "127.0.0.1".
func (s *Server) Host() string { return s.ln.Addr().(*net.TCPAddr).IP.String() }

// Port returns the port the server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// CertPool returns a pool holding the CA that signed the server's
// certificate (valid for localhost and 127.0.0.1), or nil without TLS.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// Messages returns the messages received so far, in arrival order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// WaitMessages waits until at least n messages have arrived and returns
// them all; it returns the context's error, with what did arrive, if ctx
// ends first.
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		msgs, changed := append([]Message(nil), s.messages...), s.changed
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return msgs, fmt.Errorf("mailertest: %d of %d messages arrived: %w", len(msgs), n, ctx.Err())
		}
	}
}

// Commands returns every command line received, from all connections in
// the order they arrived ("EHLO client", "MAIL FROM:<a@b>", ...). AUTH lines
// keep only the mechanism name, and SASL responses and message data are
// left out.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// Connections returns the number of connections accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Close stops the server and closes every connection, ending any stall.
// It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	live := s.live
	s.mu.Unlock()
	// The sockets are closed under go-smtp rather than through its
	// Server.Close, which races with a BDAT being handled (go-smtp
	// v0.25.1): each connection's handler then ends by itself.
	err := s.ln.Close()
	for _, c := range live {
		c.raw.Close()
	}
	return err
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	s.messages = append(s.messages, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// CommandGroups returns the commands as Commands does, grouped by the
// socket read that brought them: a client that pipelines (RFC 2920) sends
// MAIL, its RCPTs and DATA in one write, and they arrive as one group.
func (s *Server) CommandGroups() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]string
	for i, c := range s.commands {
		if i == 0 || s.groups[i] != s.groups[i-1] {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], c)
	}
	return out
}

// admit counts a MAIL against WithRateLimit; false means over the limit.
func (s *Server) admit() bool {
	n, per := s.cfg.rateN, s.cfg.ratePer
	if n <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.starts = slices.DeleteFunc(s.starts, func(t time.Time) bool { return now.Sub(t) >= per })
	if len(s.starts) >= n {
		return false
	}
	s.starts = append(s.starts, now)
	return true
}

// newRead numbers a socket read, for CommandGroups.
func (s *Server) newRead() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nreads++
	return s.nreads
}

func (s *Server) command(line string, read int) {
	if verb, rest, _ := strings.Cut(line, " "); strings.EqualFold(verb, "AUTH") {
		mech, _, _ := strings.Cut(rest, " ")
		line = "AUTH " + strings.ToUpper(mech)
	}
	s.mu.Lock()
	s.commands = append(s.commands, line)
	s.groups = append(s.groups, read)
	s.mu.Unlock()
}

// listener wraps each accepted connection for TLS, faults and recording.
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s := l.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns++
	wc := newConn(c, s, s.conns)
	s.live = append(s.live, wc)
	return wc, nil
}

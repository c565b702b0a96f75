package mailertest

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// conn sits between the socket and go-smtp's server. It does TLS itself
// (implicit, or when it sees STARTTLS), so that every command line passes
// through it in clear text whatever the security: that is where faults are
// injected and commands recorded. go-smtp is not told about TLS; the
// backend asks conn instead.
type conn struct {
	srv *Server
	n   int // connection number, from 1
	raw net.Conn

	mu    sync.Mutex
	inner net.Conn // raw, or TLS over it
	isTLS bool

	// Read-side state, used by go-smtp's connection goroutine only.
	in      []byte // read from inner, not yet split into lines
	out     []byte // lines ready for go-smtp
	midLine bool   // out ends inside an over-long line
	rerr    error
	buf     [4096]byte
	counts  map[string]int
	read    int   // the number of the socket read that filled in
	chunk   int64 // bytes of a BDAT chunk still to pass through
	last    bool  // the chunk is BDAT ... LAST's

	// Protocol state, shared by the read and write sides.
	greeted     bool
	lastCmd     string
	authing     bool   // inside an AUTH exchange: lines are SASL responses
	dataPending bool   // DATA seen, 354 not yet written
	dataFault   *Fault // a Reply fault for the message being read
	inData      bool
	ehloReply   bool // writing the reply to EHLO
}

// maxPending bounds how much of a line without its end is held before it
// is passed on as it is.
const maxPending = 16 << 10

func newConn(raw net.Conn, srv *Server, n int) *conn {
	c := &conn{srv: srv, n: n, raw: raw, inner: raw, counts: map[string]int{}}
	if srv.cfg.implicitTLS {
		c.inner, c.isTLS = tls.Server(raw, srv.tlsCfg), true
	}
	return c
}

func (c *conn) tls() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isTLS
}

func (c *conn) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner
}

func (c *conn) Read(p []byte) (int, error) {
	for len(c.out) == 0 || c.inData || c.chunk > 0 {
		if c.rerr != nil {
			break
		}
		if c.chunk > 0 {
			// A BDAT chunk passes through as it is, not as lines.
			if len(c.in) == 0 {
				if len(c.out) > 0 {
					break
				}
				c.fill()
				continue
			}
			n := min(int64(len(c.in)), c.chunk)
			c.out, c.in, c.chunk = append(c.out, c.in[:n]...), c.in[n:], c.chunk-n
			if c.chunk == 0 && c.last {
				c.counts["DOT"]++
				if f, ok := c.srv.cfg.match("DOT", c.n, c.counts["DOT"]); ok {
					c.rerr = c.endFault(f)
				}
			}
			continue
		}
		i := bytes.IndexByte(c.in, '\n')
		if i < 0 {
			if len(c.out) > 0 {
				break
			}
			if len(c.in) >= maxPending {
				c.out, c.in, c.midLine = append(c.out, c.in...), nil, true
				continue
			}
			c.fill()
			continue
		}
		line := c.in[:i+1]
		c.in = c.in[i+1:]
		if c.midLine {
			c.midLine = false
			c.out = append(c.out, line...)
			continue
		}
		if err := c.line(line); err != nil {
			c.rerr = err
		}
		if !c.inData && len(c.out) > 0 {
			break
		}
	}
	if len(c.out) == 0 {
		return 0, c.rerr
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// fill reads once from the socket into c.in.
func (c *conn) fill() {
	n, err := c.current().Read(c.buf[:])
	if n > 0 {
		c.read = c.srv.newRead()
	}
	c.in = append(c.in, c.buf[:n]...)
	if err != nil {
		c.out, c.in, c.rerr = append(c.out, c.in...), nil, err
	}
}

// line handles one client line: message data and SASL responses pass
// through; a command is recorded, may trigger a fault, and STARTTLS is
// carried out here.
func (c *conn) line(line []byte) error {
	dot := bytes.Equal(bytes.TrimRight(line, "\r\n"), []byte("."))
	c.mu.Lock()
	inData, authing := c.inData, c.authing
	if inData && dot {
		c.inData = false
	}
	c.mu.Unlock()
	if inData {
		if dot {
			c.counts["DOT"]++
			if f, ok := c.srv.cfg.match("DOT", c.n, c.counts["DOT"]); ok {
				if err := c.endFault(f); err != nil {
					return err
				}
			}
		}
		c.out = append(c.out, line...)
		return nil
	}
	if authing {
		c.out = append(c.out, line...)
		return nil
	}
	text := strings.TrimRight(string(line), "\r\n")
	verb, _, _ := strings.Cut(text, " ")
	verb = strings.ToUpper(verb)
	c.srv.command(text, c.read)
	c.counts[verb]++
	if f, ok := c.srv.cfg.match(verb, c.n, c.counts[verb]); ok {
		if f.Action == Reply {
			return c.reply(f.replyLine(), f.Code == 421)
		}
		return c.apply(f)
	}
	if verb == "MAIL" {
		if n := c.srv.cfg.maxPerConn; n > 0 && c.counts["MAIL"] > n {
			return c.reply("421 4.7.0 Too many messages on this connection\r\n", true)
		}
		if !c.srv.admit() {
			return c.reply("451 4.7.1 Rate limit exceeded, try again later\r\n", false)
		}
	}
	if verb == "BDAT" {
		// go-smtp reads the chunk that follows, even when it refuses the
		// command (RFC 3030 2); a size that does not parse has none.
		f := strings.Fields(text)
		if len(f) >= 2 {
			if n, err := strconv.ParseUint(f[1], 10, 32); err == nil {
				c.chunk, c.last = int64(n), len(f) == 3 && strings.EqualFold(f[2], "LAST")
			}
		}
	}
	c.mu.Lock()
	c.lastCmd = verb
	switch verb {
	case "AUTH":
		c.authing = true
	case "DATA":
		c.dataPending = true
	case "STARTTLS":
		if c.srv.cfg.starttls && !c.isTLS {
			c.mu.Unlock()
			return c.startTLS()
		}
	}
	c.mu.Unlock()
	c.out = append(c.out, line...)
	return nil
}

// startTLS answers STARTTLS and runs the handshake. Bytes the client sent
// after the command are dropped (RFC 3207 section 5).
func (c *conn) startTLS() error {
	if _, err := io.WriteString(c.raw, "220 2.0.0 Ready to start TLS\r\n"); err != nil {
		return err
	}
	c.in = nil
	tc := tls.Server(c.raw, c.srv.tlsCfg)
	_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	_ = tc.SetDeadline(time.Time{})
	c.mu.Lock()
	c.inner, c.isTLS = tc, true
	c.mu.Unlock()
	return nil
}

// reply answers the current command with line instead of go-smtp, which
// never sees the command, and closes the connection after it when closing.
// go-smtp has answered every earlier command: it asks for the next line
// only then.
func (c *conn) reply(line string, closing bool) error {
	if _, err := io.WriteString(c.current(), line); err != nil {
		return err
	}
	if closing {
		c.Close()
		return net.ErrClosed
	}
	return nil
}

// endFault carries out a fault at the end of a message: Reply makes the
// backend refuse the message with the fault's reply; the others are
// applied at once.
func (c *conn) endFault(f Fault) error {
	if f.Action != Reply {
		return c.apply(f)
	}
	c.mu.Lock()
	c.dataFault = &f
	c.mu.Unlock()
	return nil
}

// takeDataFault returns the reply a fault set for the message that just
// ended, if any, and clears it.
func (c *conn) takeDataFault() *Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.dataFault
	c.dataFault = nil
	return f
}

// apply carries out a fault and returns the error that ends go-smtp's
// handling of the connection.
func (c *conn) apply(f Fault) error {
	switch f.Action {
	case Stall:
		// Drain what the client sends until it leaves or Close is called.
		_, _ = io.Copy(io.Discard, c.current())
	case Reply421:
		_, _ = io.WriteString(c.current(), "421 4.3.2 Service shutting down\r\n")
	}
	c.Close()
	return net.ErrClosed
}

func (c *conn) Write(p []byte) (int, error) {
	text := string(p)
	c.mu.Lock()
	first := !c.greeted
	c.greeted = true
	if c.dataPending {
		c.dataPending = false
		c.inData = strings.HasPrefix(text, "354")
	}
	if c.authing && len(text) >= 4 && text[3] == ' ' && !strings.HasPrefix(text, "334") {
		c.authing = false
	}
	var inject string
	if c.lastCmd == "EHLO" && strings.HasPrefix(text, "250-") {
		switch {
		case c.srv.cfg.starttls && !c.isTLS:
			inject = "250-STARTTLS\r\n"
		case c.srv.cfg.requireTLS && c.isTLS:
			inject = "250-REQUIRETLS\r\n"
		}
	}
	if c.lastCmd == "EHLO" {
		c.lastCmd = ""
		c.ehloReply = true
	}
	// go-smtp writes a reply a line at a time, and always announces
	// PIPELINING and CHUNKING before other keywords, never last.
	drop := c.ehloReply && (c.srv.cfg.noPipelining && strings.HasPrefix(text, "250-PIPELINING") ||
		c.srv.cfg.noChunking && strings.HasPrefix(text, "250-CHUNKING"))
	if c.ehloReply && len(text) > 3 && text[3] == ' ' {
		c.ehloReply = false
	}
	inner := c.inner
	c.mu.Unlock()
	if first {
		c.counts["GREETING"]++
		if f, ok := c.srv.cfg.match("GREETING", c.n, 1); ok {
			return 0, c.apply(f)
		}
	}
	if drop {
		return len(p), nil
	}
	if inject != "" {
		// go-smtp offers STARTTLS and REQUIRETLS only when it does TLS
		// itself.
		if _, err := inner.Write(append(p[:len(p):len(p)], inject...)); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return inner.Write(p)
}

// Close closes the connection; it ends a stall.
func (c *conn) Close() error {
	return c.current().Close()
}

func (c *conn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.current().SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.current().SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.current().SetWriteDeadline(t) }

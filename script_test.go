package mailer

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptServer is a scripted SMTP peer for tests that need byte-level
// control over what a server says (mailertest covers the rest). Each
// accepted connection runs handle; every line the client sends is recorded.
type scriptServer struct {
	t     testing.TB
	ln    net.Listener
	mu    sync.Mutex
	lines []string
	conns int
	wg    sync.WaitGroup
}

type scriptConn struct {
	net.Conn
	r   *bufio.Reader
	srv *scriptServer
	n   int // connection number, from 1
}

func newScriptServer(t testing.TB, handle func(c *scriptConn)) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{t: t, ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			n := s.conns
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				// No test conversation lasts this long; a stuck one ends.
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				handle(&scriptConn{Conn: conn, r: bufio.NewReader(conn), srv: s, n: n})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *scriptServer) addr() string { return s.ln.Addr().String() }

// received returns the client lines recorded so far.
func (s *scriptServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

func (s *scriptServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *scriptServer) saw(prefix string) bool {
	for _, l := range s.received() {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func (c *scriptConn) send(lines ...string) {
	for _, l := range lines {
		if _, err := c.Write([]byte(l + "\r\n")); err != nil {
			return
		}
	}
}

// line reads one client line and records it; ok is false at EOF.
func (c *scriptConn) line() (string, bool) {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", false
	}
	l = strings.TrimRight(l, "\r\n")
	c.srv.mu.Lock()
	c.srv.lines = append(c.srv.lines, l)
	c.srv.mu.Unlock()
	return l, true
}

// smtpHooks overrides the basic server's reply to a command (upper-case
// verb); a hook returns false to end the connection.
type smtpHooks map[string]func(c *scriptConn, line string) bool

// serve speaks minimal SMTP: greeting, EHLO with ext, MAIL, RCPT, DATA
// (reading to the dot), RSET, NOOP, VRFY, QUIT; hooks take precedence.
func (c *scriptConn) serve(ext []string, hooks smtpHooks) {
	c.send("220 script ESMTP")
	for {
		l, ok := c.line()
		if !ok {
			return
		}
		verb := strings.ToUpper(strings.Fields(l + " x")[0])
		if h := hooks[verb]; h != nil {
			if !h(c, l) {
				return
			}
			continue
		}
		switch verb {
		case "EHLO":
			if len(ext) == 0 {
				c.send("250 script")
				continue
			}
			c.send("250-script")
			for i, e := range ext {
				if i == len(ext)-1 {
					c.send("250 " + e)
				} else {
					c.send("250-" + e)
				}
			}
		case "MAIL", "RCPT", "RSET", "NOOP":
			c.send("250 2.0.0 ok")
		case "VRFY":
			c.send("252 2.1.5 cannot verify")
		case "DATA":
			c.send("354 go ahead")
			if !c.readData() {
				return
			}
			c.send("250 2.0.0 queued as 42")
		case "QUIT":
			c.send("221 bye")
			return
		default:
			c.send("502 5.5.1 unknown")
		}
	}
}

// readData reads message lines up to the lone dot.
func (c *scriptConn) readData() bool {
	for {
		l, ok := c.line()
		if !ok {
			return false
		}
		if l == "." {
			return true
		}
	}
}

// testCtx returns a context that ends the test's wait for a hung client.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

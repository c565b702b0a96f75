package mailer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// flood writes prefix, then chunk after chunk until the client goes
// away: a server that never stops talking.
func flood(c net.Conn, prefix, chunk string) {
	if _, err := io.WriteString(c, prefix); err != nil {
		return
	}
	buf := []byte(strings.Repeat(chunk, max(1, (32<<10)/len(chunk))))
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// allocated runs fn and returns the bytes allocated meanwhile, a bound on
// its peak heap.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestEndlessRepliesAreCapped has a server stream without end at each
// place the client reads a reply: the client must give up with
// ErrReplyTooLarge (not a timeout: the timeouts here are long) after
// allocating a few MiB at most, and drop the connection.
func TestEndlessRepliesAreCapped(t *testing.T) {
	endlessLine := func(code string) func(c *scriptConn, _ string) bool {
		return func(c *scriptConn, _ string) bool { flood(c, code+" ", "x"); return false }
	}
	endlessLines := func(code string) func(c *scriptConn, _ string) bool {
		return func(c *scriptConn, _ string) bool { flood(c, "", code+"-more text\r\n"); return false }
	}
	dataHooks := func(after func(c *scriptConn, _ string) bool) smtpHooks {
		return smtpHooks{"DATA": func(c *scriptConn, l string) bool {
			c.send("354 go ahead")
			if !c.readData() {
				return false
			}
			return after(c, l)
		}}
	}
	cases := []struct {
		name     string
		security Security
		handle   func(c *scriptConn)
	}{
		{"greeting line", SecurityNone, func(c *scriptConn) { flood(c, "220 ", "x") }},
		{"greeting lines", SecurityNone, func(c *scriptConn) { flood(c, "", "220-hello\r\n") }},
		{"EHLO line", SecurityNone, func(c *scriptConn) { c.serve(nil, smtpHooks{"EHLO": endlessLine("250")}) }},
		{"EHLO lines", SecurityNone, func(c *scriptConn) { c.serve(nil, smtpHooks{"EHLO": endlessLines("250")}) }},
		{"STARTTLS lines", SecuritySTARTTLS, func(c *scriptConn) {
			c.serve([]string{"STARTTLS"}, smtpHooks{"STARTTLS": endlessLines("220")})
		}},
		{"MAIL line", SecurityNone, func(c *scriptConn) { c.serve(nil, smtpHooks{"MAIL": endlessLine("250")}) }},
		{"MAIL lines", SecurityNone, func(c *scriptConn) { c.serve(nil, smtpHooks{"MAIL": endlessLines("250")}) }},
		{"after the dot", SecurityNone, func(c *scriptConn) { c.serve(nil, dataHooks(endlessLines("250"))) }},
		// net/textproto goes on reading a multi-line reply through lines
		// that are malformed or carry another code.
		{"EHLO junk after a continuation", SecurityNone, func(c *scriptConn) {
			c.serve(nil, smtpHooks{"EHLO": func(c *scriptConn, _ string) bool { flood(c, "250-x\r\n", "x\r\n"); return false }})
		}},
		{"MAIL other code after a continuation", SecurityNone, func(c *scriptConn) {
			c.serve(nil, smtpHooks{"MAIL": func(c *scriptConn, _ string) bool { flood(c, "250-x\r\n", "251 other\r\n"); return false }})
		}},
		{"MAIL long line", SecurityNone, func(c *scriptConn) {
			c.serve(nil, smtpHooks{"MAIL": func(c *scriptConn, _ string) bool { c.send("250 " + strings.Repeat("x", 3000)); return true }})
		}},
		{"AUTH challenge", SecurityNone, func(c *scriptConn) {
			c.serve([]string{"AUTH LOGIN"}, smtpHooks{"AUTH": endlessLine("334")})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptServer(t, tc.handle)
			opts := []Option{WithSecurity(tc.security), WithGreetingTimeout(time.Minute), WithTimeout(time.Minute)}
			if tc.name == "AUTH challenge" {
				opts = append(opts, WithCredentials("u", "p"), WithInsecureAuth())
			}
			c, err := NewConnection(srv.addr(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var sendErr error
			n := allocated(func() {
				_, sendErr = c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("Subject: x\r\n\r\nhi\r\n"))
			})
			if !errors.Is(sendErr, ErrReplyTooLarge) {
				t.Fatalf("err = %v, want ErrReplyTooLarge", sendErr)
			}
			if n > 4<<20 {
				t.Errorf("allocated %d bytes reading an endless reply", n)
			}
			if len(sendErr.Error()) > 1024 {
				t.Errorf("error of %d bytes", len(sendErr.Error()))
			}
		})
	}
}

// TestEndlessProxyRepliesAreCapped does the same for proxies: an HTTP
// proxy with an endless header line or endless headers, and a SOCKS5
// proxy that grants the tunnel and then streams without end.
func TestEndlessProxyRepliesAreCapped(t *testing.T) {
	cases := []struct {
		name  string
		proxy func(addr string) *Proxy
		serve func(c net.Conn)
	}{
		{"HTTP header line", func(a string) *Proxy { return HTTPProxy(a, "", "") }, func(c net.Conn) {
			readHTTPRequest(c)
			flood(c, "HTTP/1.1 200 OK\r\nX-Long: ", "x")
		}},
		{"HTTP headers", func(a string) *Proxy { return HTTPProxy(a, "", "") }, func(c net.Conn) {
			readHTTPRequest(c)
			flood(c, "HTTP/1.1 200 OK\r\n", "X-Header: value\r\n")
		}},
		{"HTTP status line", func(a string) *Proxy { return HTTPProxy(a, "", "") }, func(c net.Conn) {
			readHTTPRequest(c)
			flood(c, "HTTP/1.1 200 ", "x")
		}},
		{"SOCKS5 then endless greeting", func(a string) *Proxy { return SOCKS5(a, "", "") }, func(c net.Conn) {
			buf := make([]byte, 512)
			if _, err := io.ReadAtLeast(c, buf, 3); err != nil { // version, methods
				return
			}
			c.Write([]byte{5, 0})
			if _, err := c.Read(buf); err != nil { // the CONNECT request
				return
			}
			c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 25})
			flood(c, "220 ", "x")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				tc.serve(c)
			}()
			c, err := NewConnection("smtp.example.test:25", WithSecurity(SecurityNone),
				WithProxy(tc.proxy(ln.Addr().String())), WithGreetingTimeout(time.Minute), WithConnectTimeout(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var connErr error
			n := allocated(func() { connErr = c.Connect(testCtx(t)) })
			if !errors.Is(connErr, ErrReplyTooLarge) {
				t.Fatalf("err = %v, want ErrReplyTooLarge", connErr)
			}
			if n > 4<<20 {
				t.Errorf("allocated %d bytes reading an endless reply", n)
			}
		})
	}
}

func readHTTPRequest(c net.Conn) {
	buf := make([]byte, 0, 1024)
	one := make([]byte, 1)
	for !bytes.HasSuffix(buf, []byte("\r\n\r\n")) && len(buf) < 4096 {
		if _, err := c.Read(one); err != nil {
			return
		}
		buf = append(buf, one[0])
	}
}

// TestServerTextInErrorsIsCutAndEscaped checks that long replies and
// control characters from the server do not reach errors and the
// transcript as they are.
func TestServerTextInErrorsIsCutAndEscaped(t *testing.T) {
	long := strings.Repeat("y", 3000)
	cases := map[string]func(c *scriptConn){
		"refused greeting": func(c *scriptConn) { c.send("554 5.7.1 " + long + "\x1b[2J") },
		"malformed greeting": func(c *scriptConn) {
			c.send("hello" + long + "\x1b[2J")
		},
		"refused MAIL": func(c *scriptConn) {
			c.serve(nil, smtpHooks{"MAIL": func(c *scriptConn, _ string) bool {
				c.send("550-5.7.1 \x1b]0;title\x07"+long, "550 5.7.1 "+long)
				return true
			}})
		},
	}
	for name, handle := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newScriptServer(t, handle)
			var debug bytes.Buffer
			c := plain(t, srv.addr(), WithDebugWriter(&debug, false))
			_, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("Subject: x\r\n\r\nhi\r\n"))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if len(msg) > 1024 || strings.ContainsAny(msg, "\x1b\x07") {
				t.Errorf("error of %d bytes, escape characters: %v", len(msg), strings.ContainsAny(msg, "\x1b\x07"))
			}
			var se *SMTPError
			if errors.As(err, &se) && len(se.Message) > maxServerText+8 {
				t.Errorf("SMTPError.Message of %d bytes", len(se.Message))
			}
			for _, l := range strings.Split(debug.String(), "\n") {
				if len(l) > maxServerText+16 || strings.ContainsAny(l, "\x1b\x07") {
					t.Errorf("transcript line of %d bytes or with escapes: %.60q", len(l), l)
				}
			}
		})
	}
}

// TestTimeoutMidLineIsATimeout: a reply line cut short by the deadline is
// neither a reply nor a protocol error.
func TestTimeoutMidLineIsATimeout(t *testing.T) {
	half := func(code string) func(c *scriptConn, _ string) bool {
		return func(c *scriptConn, _ string) bool {
			io.WriteString(c, code+" half a li")
			time.Sleep(2 * time.Second) // a stalled server, not a wait for the client
			return false
		}
	}
	cases := []struct {
		name     string
		security Security
		hooks    smtpHooks
		ext      []string
	}{
		{"MAIL", SecurityNone, smtpHooks{"MAIL": half("250")}, nil},
		{"STARTTLS", SecuritySTARTTLS, smtpHooks{"STARTTLS": half("220")}, []string{"STARTTLS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptServer(t, func(c *scriptConn) { c.serve(tc.ext, tc.hooks) })
			c, err := NewConnection(srv.addr(), WithSecurity(tc.security), WithTimeout(300*time.Millisecond),
				WithGreetingTimeout(300*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("Subject: x\r\n\r\nhi\r\n"))
			if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "short response") ||
				strings.Contains(err.Error(), "handshake") {
				t.Fatalf("err = %v, want the command's timeout", err)
			}
			if !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), "300ms") {
				t.Errorf("err = %v, want it to name %s and 300ms", err, tc.name)
			}
		})
	}
}

// TestContextDeadlineNamedInTimeouts: when the caller's context ends
// first, the error says so, not the (longer) command timeout.
func TestContextDeadlineNamedInTimeouts(t *testing.T) {
	stall := func(c *scriptConn, _ string) bool { time.Sleep(2 * time.Second); return false }
	for _, verb := range []string{"EHLO", "AUTH"} {
		t.Run(verb, func(t *testing.T) {
			srv := newScriptServer(t, func(c *scriptConn) {
				c.serve([]string{"AUTH PLAIN"}, smtpHooks{verb: stall})
			})
			c := plain(t, srv.addr(), WithCredentials("u", "p"), WithInsecureAuth())
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := c.Connect(ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want context.DeadlineExceeded", err)
			}
			if msg := err.Error(); strings.Contains(msg, "1m0s") || strings.Contains(msg, ": :") || !strings.Contains(msg, verb) {
				t.Errorf("err = %q, want it to name %s and not the 1m command timeout", msg, verb)
			}
		})
	}
}

// TestAuthRedactedWhateverTheServerCoalesces runs every mechanism against
// a server that sends its replies in every grouping, including replies
// read ahead of the client's credentials: nothing the client sends during
// AUTH may reach the transcript or the log.
func TestAuthRedactedWhateverTheServerCoalesces(t *testing.T) {
	const user, pass = "alice", "pa55-w0rd-SECRET"
	b64 := base64.StdEncoding.EncodeToString
	fixed := func(replies ...string) func(string) []string {
		return func(string) []string { return replies }
	}
	// A SCRAM server-first message that extends the client's nonce.
	scram := func(authLine string) []string {
		first, _ := base64.StdEncoding.DecodeString(strings.Fields(authLine + " x x")[2])
		_, nonce, _ := strings.Cut(string(first), ",r=")
		return []string{"334 " + b64([]byte("r="+nonce+"srv,s=c2FsdA==,i=4096")), "235 2.7.0 ok"}
	}
	tokens := []Option{WithTokenSource(TokenFunc(func(context.Context, bool) (string, error) { return pass, nil }))}
	cases := []struct {
		mech    string
		opts    []Option
		replies func(authLine string) []string
		n       int // how many replies
	}{
		{AuthPlain, nil, fixed("235 2.7.0 ok"), 1},
		{AuthLogin, nil, fixed("334 "+b64([]byte("Username:")), "334 "+b64([]byte("Password:")), "235 2.7.0 ok"), 3},
		{AuthCRAMMD5, nil, fixed("334 "+b64([]byte("<1.2@mx>")), "235 2.7.0 ok"), 2},
		{AuthXOAUTH2, tokens, fixed("334 "+b64([]byte(`{"status":"401"}`)), "535 5.7.8 no"), 2},
		{AuthOAuthBearer, tokens, fixed("235 2.7.0 ok"), 1},
		{AuthSCRAMSHA256, nil, scram, 2},
	}
	for _, tc := range cases {
		// Every way to cut the replies into packets: bit i set means a
		// packet ends after reply i.
		for cut := 0; cut < 1<<(tc.n-1); cut++ {
			t.Run(fmt.Sprintf("%s/%b", tc.mech, cut), func(t *testing.T) {
				srv := newScriptServer(t, func(c *scriptConn) {
					c.serve([]string{"AUTH " + tc.mech}, smtpHooks{"AUTH": func(c *scriptConn, l string) bool {
						var packet string
						answers := 0
						replies := tc.replies(l)
						for i, r := range replies {
							packet += r + "\r\n"
							if strings.HasPrefix(r, "334") {
								answers++ // each challenge draws one line
							}
							if i == len(replies)-1 || cut&(1<<i) != 0 {
								io.WriteString(c, packet)
								packet = ""
								for ; answers > 0; answers-- {
									c.line()
								}
							}
						}
						return true
					}})
				})
				var debug, log bytes.Buffer
				opts := append([]Option{WithDebugWriter(&debug, false), WithLogger(newTestLogger(&log)),
					WithInsecureAuth(), WithAuthMechanisms(tc.mech)}, tc.opts...)
				if tc.opts == nil {
					opts = append(opts, WithCredentials(user, pass))
				}
				c := plain(t, srv.addr(), opts...)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				c.Connect(ctx) // the outcome varies; only the transcript matters
				secrets := []string{pass, b64([]byte(pass)), b64([]byte(user)), b64([]byte("\x00" + user + "\x00" + pass))}
				for _, out := range []string{debug.String(), log.String()} {
					for _, s := range secrets {
						if strings.Contains(out, s) {
							t.Errorf("%q in the transcript:\n%s", s, out)
						}
					}
				}
				for _, l := range srv.received() {
					if l == "*" {
						t.Errorf("client sent a cancel: %q", srv.received())
					}
				}
			})
		}
	}
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestNoCancelAfterFinalAuthReply: a refused AUTH ends the exchange; the
// client must not send "*" after it (go-smtp's Client.Auth does).
func TestNoCancelAfterFinalAuthReply(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve([]string{"AUTH PLAIN"}, smtpHooks{"AUTH": func(c *scriptConn, _ string) bool {
			c.send("535 5.7.8 bad credentials")
			return true
		}})
	})
	c := plain(t, srv.addr(), WithCredentials("u", "p"), WithInsecureAuth())
	err := c.Connect(testCtx(t))
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 535 || se.Command != "AUTH PLAIN" {
		t.Fatalf("err = %v, want the 535", err)
	}
	for _, l := range srv.received() {
		if l == "*" {
			t.Errorf("client sent a cancel after the final reply: %q", srv.received())
		}
	}
}

// TestSCRAMIterationsBounded: a server cannot make the client spend
// unbounded CPU, and the derivation stops with the context.
func TestSCRAMIterationsBounded(t *testing.T) {
	c := newSCRAMClient(context.Background(), AuthSCRAMSHA256, sha256Hash, "u", "p")
	c.Start()
	if _, err := c.Next([]byte("r=" + c.nonce + "x,s=c2FsdA==,i=4194304")); err == nil {
		t.Error("4,194,304 iterations accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c = newSCRAMClient(ctx, AuthSCRAMSHA256, sha256Hash, "u", "p")
	if _, err := c.hi([]byte("salt"), maxSCRAMIterations); !errors.Is(err, context.Canceled) {
		t.Errorf("derivation with a cancelled context: err = %v", err)
	}
}

// TestProxyFormatHidesPassword prints a proxy with every verb.
func TestProxyFormatHidesPassword(t *testing.T) {
	p := SOCKS5("127.0.0.1:1080", "user", "hunter2-secret")
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%T %v"} {
		for _, arg := range []any{p, *p, []*Proxy{p}, struct{ P *Proxy }{p}, struct{ P Proxy }{*p}} {
			if out := fmt.Sprintf(verb, arg); strings.Contains(out, "hunter2") ||
				strings.Contains(out, fmt.Sprintf("%x", "hunter2")) {
				t.Errorf("Sprintf(%q, %T) = %s", verb, arg, out)
			}
		}
	}
}

// TestDialErrorHasNoNilAddress: without WithSourceAddress, a refused dial
// must not read "dial tcp <nil>->...".
func TestDialErrorHasNoNilAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := plain(t, addr)
	err = c.Connect(testCtx(t))
	if err == nil || strings.Contains(err.Error(), "<nil>") {
		t.Errorf("err = %v", err)
	}
}

// TestVerify251IsConfirmation: 251 "not local, will forward" confirms the
// address, as Verify documents.
func TestVerify251IsConfirmation(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"VRFY": func(c *scriptConn, _ string) bool {
			c.send("251 2.1.5 User not local; will forward to <x@elsewhere.test>")
			return true
		}})
	})
	c := plain(t, srv.addr())
	if err := c.Verify(testCtx(t), "x@example.test"); err != nil {
		t.Errorf("Verify after 251: %v", err)
	}
}

// smallBufferDialer dials with a small socket send buffer, so that a slow
// reader on loopback is felt by the writer within kilobytes rather than
// megabytes.
type smallBufferDialer struct{}

func (smallBufferDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(8 << 10)
	}
	return c, err
}

// TestTricklingServerTimesOut: a server that reads message data at a
// trickle (4 KiB every 50 ms), each write progressing well within the
// command timeout, fails the send once the minimum data rate is not kept,
// instead of holding the session for as long as the context allows.
func TestTricklingServerTimesOut(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.Conn.(*net.TCPConn).SetReadBuffer(4 << 10)
		c.serve(nil, smtpHooks{"DATA": func(c *scriptConn, _ string) bool {
			c.send("354 go ahead")
			buf := make([]byte, 4<<10)
			for {
				time.Sleep(50 * time.Millisecond) // the trickle itself
				if _, err := c.r.Read(buf); err != nil {
					return false
				}
			}
		}})
	})
	c := plain(t, srv.addr(), WithDialer(smallBufferDialer{}), WithTimeout(300*time.Millisecond), WithMinDataRate(1<<20))
	body := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("z", 76)+"\r\n", 4<<20/78)
	_, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(body))
	var te *timeoutError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want the data timeout", err)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("err = %v: the dot was never sent, so the outcome is known", err)
	}
}

// TestCloseIsBoundedAndInterrupts: Close sends QUIT to every idle session
// at once, does not wait long for servers that never answer it, and
// interrupts a send stalled after the final dot.
func TestCloseIsBoundedAndInterrupts(t *testing.T) {
	quits := make(chan struct{}, 8)
	release := make(chan struct{})
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"QUIT": func(c *scriptConn, _ string) bool {
			quits <- struct{}{}
			<-release // never answered while the test runs
			return false
		}})
	})
	defer close(release)
	c, err := NewConnection(srv.addr(), WithSecurity(SecurityNone), WithMaxConnections(4))
	if err != nil {
		t.Fatal(err)
	}
	// Four sessions at once, all idle afterwards.
	errs := make(chan error, 4)
	hold := make(chan struct{})
	for range 4 {
		go func() { errs <- c.run(testCtx(t), func(context.Context, *session) error { <-hold; return nil }, nil) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.connections() < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(hold)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	// All four QUITs arrive while none is answered: they went in parallel.
	for i := range 4 {
		select {
		case <-quits:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d QUITs seen; Close sends them one after another", i)
		}
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}

	// A send stalled after its final dot is interrupted by Close.
	dot := make(chan struct{})
	srv2 := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"DATA": func(c *scriptConn, _ string) bool {
			c.send("354 go ahead")
			c.readData()
			close(dot)
			<-release
			return false
		}})
	})
	c2 := plain(t, srv2.addr())
	sent := make(chan error, 1)
	go func() {
		_, err := c2.SendRaw(testCtx(t), testEnvelope, strings.NewReader("Subject: x\r\n\r\nhi\r\n"))
		sent <- err
	}()
	<-dot
	c2.Close()
	select {
	case err := <-sent:
		if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
			t.Errorf("err = %v, want ErrOutcomeUnknown and ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not interrupt the send")
	}
}

// TestCancelDuringAuthSendsNoQuit: once the caller's context has ended,
// the session that failed in AUTH is closed, not QUIT with a fresh
// timeout.
func TestCancelDuringAuthSendsNoQuit(t *testing.T) {
	authSeen := make(chan struct{})
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve([]string{"AUTH PLAIN"}, smtpHooks{"AUTH": func(c *scriptConn, _ string) bool {
			close(authSeen)
			for {
				if _, ok := c.line(); !ok { // read on, answer nothing
					return false
				}
			}
		}})
	})
	c := plain(t, srv.addr(), WithCredentials("u", "p"), WithInsecureAuth())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-authSeen; cancel() }()
	if err := c.Connect(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if srv.saw("QUIT") {
		t.Error("QUIT sent after the context was cancelled")
	}
}

// TestMoreServerTextClipped: AUTH mechanism names and an OAUTHBEARER
// error come from the server too.
func TestMoreServerTextClipped(t *testing.T) {
	long := strings.Repeat("M", 1900)
	cases := map[string]struct {
		ext   string
		hooks smtpHooks
		opts  []Option
	}{
		"mechanisms": {"AUTH X\x1b]0;owned\x07" + long, nil, []Option{WithCredentials("u", "p")}},
		"OAUTHBEARER error": {"AUTH OAUTHBEARER", smtpHooks{"AUTH": func(c *scriptConn, _ string) bool {
			c.send("334 " + base64.StdEncoding.EncodeToString([]byte(`{"status":"\u001b[2J`+long+`"}`)))
			c.line()
			c.send("535 5.7.8 no")
			return true
		}}, []Option{WithTokenSource(TokenFunc(func(context.Context, bool) (string, error) { return "tok", nil }))}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newScriptServer(t, func(c *scriptConn) { c.serve([]string{tc.ext}, tc.hooks) })
			c := plain(t, srv.addr(), append(tc.opts, WithInsecureAuth())...)
			err := c.Connect(testCtx(t))
			if err == nil || len(err.Error()) > 1024 || strings.ContainsAny(err.Error(), "\x1b\x07") {
				t.Errorf("err of %d bytes: %.200q", len(fmt.Sprint(err)), fmt.Sprint(err))
			}
		})
	}
}

// TestVerifyChecksItsArgument: VRFY's argument follows the address rule.
func TestVerifyChecksItsArgument(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.serve(nil, nil) })
	c := plain(t, srv.addr())
	for _, arg := range []string{"a\x1b[2J@x.test", "a\vb@x.test", "a\x7f@x.test", strings.Repeat("a", 5000) + "@x.test", "user\x1b", ""} {
		if err := c.Verify(testCtx(t), arg); !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("Verify(%.40q): err = %v", arg, err)
		}
	}
	if srv.saw("VRFY") {
		t.Error("a bad VRFY argument was sent")
	}
	if err := c.Verify(testCtx(t), "postmaster"); err != nil {
		var se *SMTPError
		if !errors.As(err, &se) || se.Code != 252 {
			t.Errorf("Verify(postmaster): %v", err)
		}
	}
}

// TestHTTPProxyBodyHeaderIgnored: a 200 to CONNECT has no body whatever
// its header says (RFC 9110 9.3.6): the greeting after it is SMTP's.
func TestHTTPProxyBodyHeaderIgnored(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		readHTTPRequest(c)
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\nContent-Length: 4\r\n\r\n220 smtp.example.test ESMTP\r\n")
		sc := &scriptConn{Conn: c, r: bufio.NewReader(c), srv: &scriptServer{t: t}}
		for {
			l, ok := sc.line()
			if !ok {
				return
			}
			switch strings.Fields(l + " x")[0] {
			case "EHLO":
				sc.send("250 smtp.example.test")
			case "QUIT":
				sc.send("221 bye")
				return
			}
		}
	}()
	c, err := NewConnection("smtp.example.test:25", WithSecurity(SecurityNone), WithProxy(HTTPProxy(ln.Addr().String(), "", "")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(testCtx(t)); err != nil {
		t.Errorf("Connect: %v", err)
	}
}

// TestCancelDuringProxyHandshake: the caller's cancellation is not the
// proxy's fault.
func TestCancelDuringProxyHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // and say nothing
		}
	}()
	c, err := NewConnection("smtp.example.test:25", WithSecurity(SecurityNone), WithProxy(HTTPProxy(ln.Addr().String(), "", "")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { conn := <-accepted; defer conn.Close(); cancel() }()
	err = c.Connect(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrProxyUnreachable) || strings.Count(err.Error(), "connecting to") > 1 {
		t.Errorf("err = %v", err)
	}
}

// TestHandshakeErrorClipped: a certificate can carry 99 long names with
// control characters, and crypto/x509 lists them in its error.
func TestHandshakeErrorClipped(t *testing.T) {
	inner := errors.New("x509: certificate is valid for " + strings.Repeat("n\x1b[31m"+strings.Repeat("x", 500)+", ", 99))
	err := error(&handshakeError{what: "TLS handshake", addr: "mx:465", err: inner})
	if !errors.Is(err, ErrTLSRequired) || !errors.Is(err, inner) || len(err.Error()) > 1024 || strings.Contains(err.Error(), "\x1b") ||
		strings.Contains(err.Error(), "not available") {
		t.Errorf("err = %.200q (%d bytes)", err.Error(), len(err.Error()))
	}
}

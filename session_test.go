package mailer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var testEnvelope = Envelope{From: "from@example.test", To: []string{"to@example.test"}}

func plain(t *testing.T, addr string, opts ...Option) *Connection {
	t.Helper()
	c, err := NewConnection(addr, append([]Option{WithSecurity(SecurityNone)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSTARTTLSRequiredButNotOffered(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.serve([]string{"PIPELINING", "AUTH PLAIN"}, nil) })
	c, err := NewConnection(srv.addr(), WithSecurity(SecuritySTARTTLS), WithCredentials("u", "p"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("Subject: x\r\n\r\nhi\r\n"))
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("err = %v, want ErrTLSRequired", err)
	}
	for _, l := range srv.received() {
		if !strings.HasPrefix(l, "EHLO") && l != "QUIT" {
			t.Errorf("client sent %q to a server without STARTTLS", l)
		}
	}
}

func TestSTARTTLSOptionalGoesOnInClear(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.serve([]string{"PIPELINING"}, nil) })
	c, err := NewConnection(srv.addr(), WithSecurity(SecuritySTARTTLSOptional))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("Subject: x\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.TLSConnectionState(); ok {
		t.Error("TLS state reported for a clear-text session")
	}
	ehlos := 0
	for _, l := range srv.received() {
		if strings.HasPrefix(l, "EHLO") {
			ehlos++
		}
	}
	if ehlos != 1 {
		t.Errorf("%d EHLOs, want 1", ehlos)
	}
}

func TestSTARTTLSRefused(t *testing.T) {
	refuse := smtpHooks{"STARTTLS": func(c *scriptConn, _ string) bool {
		c.send("454 4.7.0 TLS not available")
		return true
	}}
	srv := newScriptServer(t, func(c *scriptConn) { c.serve([]string{"STARTTLS"}, refuse) })
	c, _ := NewConnection(srv.addr(), WithSecurity(SecuritySTARTTLS))
	defer c.Close()
	err := c.Connect(testCtx(t))
	var se *SMTPError
	if !errors.Is(err, ErrTLSRequired) || !errors.As(err, &se) || se.Code != 454 || se.Command != "STARTTLS" {
		t.Fatalf("required: err = %v, want ErrTLSRequired with the 454", err)
	}
	opt, _ := NewConnection(srv.addr(), WithSecurity(SecuritySTARTTLSOptional))
	defer opt.Close()
	if _, err := opt.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n")); err != nil {
		t.Fatalf("optional: %v", err)
	}
}

func TestSTARTTLSHandshakeFailureSendsNothing(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve([]string{"STARTTLS"}, smtpHooks{"STARTTLS": func(c *scriptConn, _ string) bool {
			c.send("220 go ahead", "250 this is not TLS")
			c.line()
			return false
		}})
	})
	c, _ := NewConnection(srv.addr(), WithSecurity(SecuritySTARTTLSOptional))
	defer c.Close()
	_, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n"))
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("err = %v, want ErrTLSRequired even in optional mode once STARTTLS was accepted", err)
	}
	if srv.saw("MAIL") {
		t.Error("MAIL sent after a failed handshake")
	}
}

func TestNoGreetingSuggestsImplicitTLS(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.line() })
	c, _ := NewConnection(srv.addr(), WithGreetingTimeout(200*time.Millisecond))
	defer c.Close()
	start := time.Now()
	err := c.Connect(testCtx(t))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "try SecurityTLS") {
		t.Fatalf("err = %v, want a deadline error suggesting SecurityTLS", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestTLSRecordAtGreeting(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.Write([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46})
		c.line()
	})
	c, _ := NewConnection(srv.addr())
	defer c.Close()
	err := c.Connect(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "use SecurityTLS") {
		t.Fatalf("err = %v, want the implicit-TLS diagnosis", err)
	}
}

func TestImplicitTLSOnPlainPort(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.serve(nil, nil) })
	c, _ := NewConnection(srv.addr(), WithSecurity(SecurityTLS))
	defer c.Close()
	err := c.Connect(testCtx(t))
	if !errors.Is(err, ErrTLSRequired) || !strings.Contains(err.Error(), "use SecuritySTARTTLS") {
		t.Fatalf("err = %v, want the STARTTLS diagnosis", err)
	}
}

func TestGreetingRefused(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.send("554 5.3.2 no service for you") })
	c := plain(t, srv.addr())
	err := c.Connect(testCtx(t))
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 554 || se.EnhancedCode != (EnhancedCode{5, 3, 2}) || se.Command != "greeting" {
		t.Fatalf("err = %v, want the 554 greeting as *SMTPError", err)
	}
}

func TestSmugglingNormalised(t *testing.T) {
	var data bytes.Buffer
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"DATA": func(c *scriptConn, _ string) bool {
			c.send("354 go")
			for {
				l, err := c.r.ReadString('\n')
				if err != nil {
					return false
				}
				data.WriteString(l)
				if l == ".\r\n" {
					break
				}
			}
			c.send("250 ok")
			return true
		}})
	})
	c := plain(t, srv.addr())
	body := "Subject: x\r\n\r\nhello\r.\r\nMAIL FROM:<evil@example.test>\r\nbare\nlf\r"
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	got := data.String()
	want := "Subject: x\r\n\r\nhello\r\n..\r\nMAIL FROM:<evil@example.test>\r\nbare\r\nlf\r\n.\r\n"
	if got != want {
		t.Errorf("server got %q, want %q", got, want)
	}
	if srv.saw("MAIL FROM:<evil") {
		t.Error("smuggled command reached the server as a command")
	}
}

func TestBodyReaderFailureDropsConnection(t *testing.T) {
	dataEnded := make(chan bool, 2)
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"DATA": func(c *scriptConn, _ string) bool {
			c.send("354 go")
			dot := c.readData()
			dataEnded <- dot
			if dot {
				c.send("250 ok")
			}
			return dot
		}})
	})
	c := plain(t, srv.addr())
	r := io.MultiReader(strings.NewReader("Subject: x\r\n\r\npart"), iotest.ErrReader(errors.New("disk on fire")))
	_, err := c.SendRaw(testCtx(t), testEnvelope, r)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("err = %v", err)
	}
	select {
	case dot := <-dataEnded:
		if dot {
			t.Error("the final dot was sent after the body failed")
		}
	case <-testCtx(t).Done():
		t.Fatal("server never saw the end of the data")
	}
	// The next send works on a new connection.
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if n := srv.connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestDropAfterDotIsOutcomeUnknown(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"DATA": func(c *scriptConn, _ string) bool {
			c.send("354 go")
			c.readData()
			return false
		}})
	})
	c := plain(t, srv.addr())
	_, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n"))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want ErrOutcomeUnknown", err)
	}
}

func TestCancelUnblocksStalledServer(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"MAIL": func(c *scriptConn, _ string) bool {
			c.line() // stall until the client goes away
			return false
		}})
	})
	c := plain(t, srv.addr())
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.SendRaw(ctx, testEnvelope, strings.NewReader("x\r\n"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestCommandTimeout(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"RCPT": func(c *scriptConn, _ string) bool {
			c.line()
			return false
		}})
	})
	c := plain(t, srv.addr(), WithTimeout(300*time.Millisecond))
	_, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n"))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "RCPT") {
		t.Fatalf("err = %v, want a RCPT deadline error", err)
	}
}

func TestRecipientsRefused(t *testing.T) {
	refuse := smtpHooks{"RCPT": func(c *scriptConn, l string) bool {
		switch {
		case strings.Contains(l, "bad@"):
			c.send("550 5.1.1 no such user")
		case strings.Contains(l, "later@"):
			c.send("451 4.3.0 try later")
		default:
			c.send("250 ok")
		}
		return true
	}}
	srv := newScriptServer(t, func(c *scriptConn) { c.serve(nil, refuse) })
	env := Envelope{From: "a@example.test", To: []string{"good@example.test", "bad@example.test", "later@example.test"}}

	c := plain(t, srv.addr())
	_, err := c.SendRaw(testCtx(t), env, strings.NewReader("x\r\n"))
	var re *RecipientsError
	if !errors.As(err, &re) || len(re.Rejected) != 2 {
		t.Fatalf("err = %v, want a RecipientsError with two refusals", err)
	}
	if re.Rejected[0].Address != "bad@example.test" || !strings.Contains(err.Error(), "later@example.test") {
		t.Errorf("refusals = %+v", re.Rejected)
	}
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.Command != "RCPT" {
		t.Errorf("errors.As SMTPError = %+v", se)
	}
	if srv.saw("DATA") || !srv.saw("RSET") {
		t.Errorf("all-or-nothing: lines %q", srv.received())
	}
	// The session was reset and is reused for the next message.
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if n := srv.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}

	p := plain(t, srv.addr(), WithPartialDelivery())
	res, err := p.SendRaw(testCtx(t), env, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Accepted) != 1 || len(res.Rejected) != 2 || res.Response != "2.0.0 queued as 42" {
		t.Errorf("partial result = %+v", res)
	}
}

func TestReplies421RetireSession(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve(nil, smtpHooks{"MAIL": func(c *scriptConn, _ string) bool {
			if c.n == 1 {
				c.send("421 4.3.2 shutting down")
				return false
			}
			c.send("250 ok")
			return true
		}})
	})
	c := plain(t, srv.addr())
	_, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n"))
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 421 || !se.Temporary() {
		t.Fatalf("err = %v, want 421", err)
	}
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if n := srv.connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestStaleSessionRedialled(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		mails := 0
		c.serve(nil, smtpHooks{"MAIL": func(c *scriptConn, _ string) bool {
			mails++
			if c.n == 1 && mails == 2 {
				c.send("421 4.4.2 idle timeout")
				return false
			}
			c.send("250 ok")
			return true
		}})
	})
	c := plain(t, srv.addr())
	for i := 0; i < 2; i++ {
		if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n")); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if n := srv.connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestIdleSessionProbedWithNoop(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.serve(nil, nil) })
	c := plain(t, srv.addr())
	c.cfg.healthCheckAfter = time.Nanosecond
	for i := 0; i < 2; i++ {
		if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if !srv.saw("NOOP") {
		t.Error("no NOOP after idling")
	}
	c2 := plain(t, srv.addr())
	before := len(srv.received())
	for i := 0; i < 2; i++ {
		if _, err := c2.SendRaw(testCtx(t), testEnvelope, strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range srv.received()[before:] {
		if l == "NOOP" || l == "RSET" {
			t.Errorf("%s between back-to-back sends", l)
		}
	}
}

func TestEnvelopeChecked(t *testing.T) {
	c := plain(t, "127.0.0.1:1")
	cases := []struct {
		env  Envelope
		want error
	}{
		{Envelope{From: "a@b.test"}, ErrInvalidAddress},
		{Envelope{From: "a@b.test\r\nRCPT TO:<x@y>", To: []string{"c@d.test"}}, ErrHeaderInjection},
		{Envelope{From: "a@b.test", To: []string{"no-at-sign"}}, ErrInvalidAddress},
		{Envelope{From: "a@b.test", To: []string{"<c@d.test>"}}, ErrInvalidAddress},
	}
	for _, tc := range cases {
		if _, err := c.SendRaw(testCtx(t), tc.env, strings.NewReader("x")); !errors.Is(err, tc.want) {
			t.Errorf("%+v: err = %v, want %v", tc.env, err, tc.want)
		}
	}
}

func TestVerifyAndNoop(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.serve([]string{"SIZE 1000", "VRFY", "SMTPUTF8"}, nil) })
	c := plain(t, srv.addr())
	ctx := testCtx(t)
	if err := c.Noop(ctx); err != nil {
		t.Fatal(err)
	}
	err := c.Verify(ctx, "someone@example.test")
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 252 {
		t.Errorf("Verify = %v, want 252", err)
	}
	if n, ok := c.MaxMessageSize(); !ok || n != 1000 {
		t.Errorf("MaxMessageSize = %d %v", n, ok)
	}
	if !c.HasExtension("smtputf8") || c.Extensions()["SIZE"] != "1000" {
		t.Errorf("extensions = %v", c.Extensions())
	}
	_, err = c.SendRaw(ctx, testEnvelope, strings.NewReader(strings.Repeat("x", 2000)))
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("err = %v, want ErrMessageTooLarge", err)
	}
	if srv.saw("MAIL") {
		t.Error("MAIL sent for a message known to be too large")
	}
}

func TestClose(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) { c.serve(nil, nil) })
	c := plain(t, srv.addr())
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !srv.saw("QUIT") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !srv.saw("QUIT") {
		t.Error("no QUIT on Close")
	}
	if err := c.Noop(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

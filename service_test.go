package mailer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
	"golang.org/x/time/rate"
)

// plainConnect connects to an unencrypted mailertest server.
func plainConnect(t *testing.T, srv *mailertest.Server, opts ...Option) *Connection {
	return connect(t, srv, append([]Option{WithSecurity(SecurityNone)}, opts...)...)
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func count(list []string, prefix string) int {
	n := 0
	for _, l := range list {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

func msgTo(id string, to ...string) *Message {
	m := &Message{From: Recipient{Address: "from@example.test"}, Subject: "s", Text: "body\n", MessageID: id}
	for _, a := range to {
		m.To = append(m.To, Recipient{Address: a})
	}
	return m
}

func TestServiceOptionsValidated(t *testing.T) {
	bad := map[string]Option{
		"idle":      WithIdleTimeout(-time.Second),
		"messages":  WithMaxMessagesPerSession(-1),
		"lifetime":  WithMaxSessionLifetime(-time.Second),
		"health":    WithHealthCheck(-time.Second),
		"rate n":    WithRateLimit(0, time.Second, 1),
		"rate per":  WithRateLimit(1, 0, 1),
		"burst":     WithRateLimit(1, time.Second, 0),
		"attempts":  WithRetry(RetryPolicy{Attempts: 0}),
		"delay":     WithRetry(RetryPolicy{Attempts: 2, Delay: -1}),
		"max delay": WithRetry(RetryPolicy{Attempts: 2, MaxDelay: -1}),
	}
	for name, opt := range bad {
		if _, err := NewConnection("localhost", opt); err == nil {
			t.Errorf("%s: invalid value accepted", name)
		}
	}
	c, err := NewConnection("localhost", WithRetry(RetryPolicy{Attempts: 3}))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.cfg.retry; p.Delay != time.Second || p.MaxDelay != 30*time.Second {
		t.Errorf("retry defaults: %+v", p)
	}
	if c.cfg.idleTimeout != defaultIdleTimeout || c.cfg.retry.Attempts != 3 {
		t.Errorf("defaults: idle %v", c.cfg.idleTimeout)
	}
}

// TestIdleSessionsRetired: an idle session is closed with QUIT after the
// idle timeout, in the background, and the next send opens a new one.
func TestIdleSessionsRetired(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv, WithIdleTimeout(20*time.Millisecond))
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the idle session to be retired", func() bool {
		return c.Stats().SessionsRetired == 1 && slices.Contains(srv.Commands(), "QUIT")
	})
	if st := c.Stats(); st.Idle != 0 || st.SessionsOpened != 1 {
		t.Errorf("stats after retiring: %+v", st)
	}
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestMaxMessagesPerSession: a provider that closes the connection after
// 3 messages is never hit when the pool retires sessions at 3, through
// Send and SendAll.
func TestMaxMessagesPerSession(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprint("SendAll=", all), func(t *testing.T) {
			srv := newTestServer(t, mailertest.WithMaxMessagesPerConnection(3))
			c := plainConnect(t, srv, WithMaxMessagesPerSession(3))
			msgs := streamMsgs(7, nil, nil)
			if all {
				for i, o := range collect(c.SendAll(testCtx(t), slices.Values(msgs))) {
					if o.err != nil {
						t.Errorf("message %d: %v", i, o.err)
					}
				}
			} else {
				for _, m := range msgs {
					if _, err := c.Send(testCtx(t), m); err != nil {
						t.Fatal(err)
					}
				}
			}
			if n := srv.Connections(); n != 3 {
				t.Errorf("%d connections for 7 messages at 3 per session, want 3", n)
			}
			waitFor(t, "the last retired session's QUIT", func() bool { return count(srv.Commands(), "QUIT") == 2 })
			if got := len(srv.Messages()); got != 7 {
				t.Errorf("%d messages arrived, want 7", got)
			}
		})
	}
}

// TestMaxSessionLifetime: a session past its lifetime is used for the
// transaction in progress, then retired.
func TestMaxSessionLifetime(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv, WithMaxSessionLifetime(time.Nanosecond))
	for range 3 {
		if _, err := sendRaw(t, c); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Connections(); n != 3 {
		t.Errorf("%d connections, want one per message", n)
	}
	if st := c.Stats(); st.SessionsRetired != 3 {
		t.Errorf("%d retired, want 3", st.SessionsRetired)
	}
}

// TestRateLimitWaitsWithContext: a send beyond the rate waits, and the
// wait ends with the send's context without sending anything.
func TestRateLimitWaitsWithContext(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv, WithRateLimit(1, time.Hour, 1))
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	_, err := c.SendRaw(ctx, testEnvelope, strings.NewReader(rawBody))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if got := len(srv.Messages()); got != 1 {
		t.Errorf("%d messages sent, want 1", got)
	}
	if st := c.Stats(); st.RateLimitWaits != 1 || st.FailedTemporary != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// TestRateLimitSlowsDown: the server's rate-limit reply halves the
// client's rate; after the slow-down period the configured rate returns.
func TestRateLimitSlowsDown(t *testing.T) {
	srv := newTestServer(t, mailertest.WithRateLimit(2, time.Hour))
	c := plainConnect(t, srv, WithRateLimit(1000, time.Second, 100))
	for range 2 {
		if _, err := sendRaw(t, c); err != nil {
			t.Fatal(err)
		}
	}
	_, err := sendRaw(t, c)
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (EnhancedCode{4, 7, 1}) {
		t.Fatalf("got %v, want the server's 451 4.7.1", err)
	}
	if got := c.limiter.lim.Limit(); got != 500 {
		t.Errorf("limit after a rate reply: %v, want 500", got)
	}
	if st := c.Stats(); st.SlowDowns != 1 {
		t.Errorf("slow-downs: %d", st.SlowDowns)
	}
	c.limiter.slowDown()
	if got := c.limiter.lim.Limit(); got != 250 {
		t.Errorf("limit after a second rate reply: %v, want 250", got)
	}
	for range 10 {
		c.limiter.slowDown()
	}
	if got := c.limiter.lim.Limit(); got != rate.Limit(1000.0/slowDownFloor) {
		t.Errorf("limit at the floor: %v", got)
	}
	c.limiter.slowUntil = time.Now().Add(-time.Second)
	if _, err := c.limiter.wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := c.limiter.lim.Limit(); got != 1000 {
		t.Errorf("limit after the slow-down period: %v, want 1000", got)
	}
}

func TestIsRateReply(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{newReply("MAIL", 451, "4.7.1 Rate limit exceeded"), true},
		{newReply("MAIL", 421, "4.7.0 Too many connections"), true},
		{newReply("MAIL", 454, "Throttling failure: Maximum sending rate exceeded."), true},
		{newReply("RCPT", 450, "4.7.28 too many messages from your IP"), true},
		{newReply("MAIL", 451, "4.3.0 Temporary failure"), false},
		{newReply("RCPT", 452, "4.5.3 Too many recipients"), false},
		{newReply("MAIL", 550, "5.7.1 Rate limit: message refused"), false},
		{&RecipientsError{Rejected: []RejectedRecipient{{Address: "a@b.c", Err: newReply("RCPT", 550, "5.1.1 no")},
			{Address: "d@b.c", Err: newReply("RCPT", 451, "4.7.1 rate limited")}}}, true},
		{errors.New("rate limit"), false},
	}
	for _, tc := range cases {
		if got := isRateReply(tc.err); got != tc.want {
			t.Errorf("isRateReply(%v) = %v", tc.err, got)
		}
	}
}

// retrying returns a Connection to srv that retries quickly.
func retrying(t *testing.T, srv *mailertest.Server, opts ...Option) *Connection {
	return plainConnect(t, srv, append([]Option{WithRetry(RetryPolicy{Attempts: 3, Delay: time.Millisecond, MaxDelay: 2 * time.Millisecond})}, opts...)...)
}

// TestRetryRules sends one message through each fault: what provably
// delivered nothing is retried, the rest is not.
func TestRetryRules(t *testing.T) {
	reply := func(cmd string, nth, code int, enh string) mailertest.Option {
		return mailertest.WithFault(mailertest.Fault{Command: cmd, Conn: 1, Nth: nth, Action: mailertest.Reply, Code: code, Enhanced: enh, Text: "fault"})
	}
	cases := []struct {
		name     string
		srv      []mailertest.Option
		attempts int   // the SendResult's, when it succeeds
		err      error // the error, when it fails (matched with errors.Is or by code)
		code     int
		mails    int // MAIL commands the server saw
	}{
		{name: "451 to MAIL", srv: []mailertest.Option{reply("MAIL", 1, 451, "4.3.0")}, attempts: 2, mails: 2},
		{name: "421 to MAIL", srv: []mailertest.Option{reply("MAIL", 1, 421, "4.3.2")}, attempts: 2, mails: 2},
		{name: "451 to RCPT", srv: []mailertest.Option{reply("RCPT", 1, 451, "4.3.0")}, attempts: 2, mails: 2},
		{name: "451 to DATA", srv: []mailertest.Option{reply("DATA", 1, 451, "4.3.0"), mailertest.WithoutChunking()}, attempts: 2, mails: 2},
		{name: "421 to DATA", srv: []mailertest.Option{reply("DATA", 1, 421, "4.3.2"), mailertest.WithoutChunking()}, attempts: 2, mails: 2},
		{name: "421 greeting", srv: []mailertest.Option{mailertest.WithFault(mailertest.Fault{Command: "GREETING", Conn: 1, Action: mailertest.Reply421})}, attempts: 2, mails: 1},
		{name: "dropped at EHLO", srv: []mailertest.Option{mailertest.WithFault(mailertest.Fault{Command: "EHLO", Conn: 1, Action: mailertest.Drop})}, attempts: 2, mails: 1},
		{name: "451 every time", srv: []mailertest.Option{mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0"})}, code: 451, mails: 3},
		{name: "550 to MAIL", srv: []mailertest.Option{reply("MAIL", 1, 550, "5.7.1")}, code: 550, mails: 1},
		{name: "451 to the final dot", srv: []mailertest.Option{reply("DOT", 1, 451, "4.3.0"), mailertest.WithoutChunking()}, code: 451, mails: 1},
		{name: "451 to BDAT LAST", srv: []mailertest.Option{reply("DOT", 1, 451, "4.3.0")}, code: 451, mails: 1},
		{name: "dropped after the dot", srv: []mailertest.Option{mailertest.WithFault(mailertest.Fault{Command: "DOT", Conn: 1, Action: mailertest.Drop}), mailertest.WithoutChunking()}, err: ErrOutcomeUnknown, mails: 1},
		{name: "dropped after BDAT LAST", srv: []mailertest.Option{mailertest.WithFault(mailertest.Fault{Command: "DOT", Conn: 1, Action: mailertest.Drop})}, err: ErrOutcomeUnknown, mails: 1},
		{name: "451 without PIPELINING", srv: []mailertest.Option{reply("MAIL", 1, 451, "4.3.0"), mailertest.WithoutPipelining()}, attempts: 2, mails: 2},
		{name: "final 451 without PIPELINING", srv: []mailertest.Option{reply("DOT", 1, 451, "4.3.0"), mailertest.WithoutPipelining()}, code: 451, mails: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(t, tc.srv...)
			c := retrying(t, srv)
			res, err := c.Send(testCtx(t), msgTo("retry@example.test", "to@example.test"))
			mails := count(srv.Commands(), "MAIL")
			if mails != tc.mails {
				t.Errorf("%d MAIL commands, want %d", mails, tc.mails)
			}
			if tc.attempts > 0 {
				if err != nil {
					t.Fatalf("not retried: %v", err)
				}
				if res.Attempts != tc.attempts || res.MessageID != "retry@example.test" {
					t.Errorf("result %+v", res)
				}
				if n := len(srv.Messages()); n != 1 {
					t.Errorf("%d messages arrived, want 1", n)
				}
				return
			}
			var se *SMTPError
			switch {
			case err == nil:
				t.Fatal("succeeded")
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Errorf("got %v, want %v", err, tc.err)
			case tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code):
				t.Errorf("got %v, want a %d", err, tc.code)
			}
			if len(srv.Messages()) != 0 && tc.err != ErrOutcomeUnknown {
				t.Error("a failed message arrived")
			}
		})
	}
}

// TestRetryPartialRecipients: with partial delivery only the recipients
// refused with 4xx are sent again, and the result lists each once.
func TestRetryPartialRecipients(t *testing.T) {
	srv := newTestServer(t,
		mailertest.WithFault(mailertest.Fault{Command: "RCPT", Conn: 1, Nth: 2, Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: "later"}),
		mailertest.WithRecipientReply("gone@example.test", 550, "5.1.1", "no such user"))
	c := retrying(t, srv)
	m := msgTo("partial@example.test", "a@example.test", "b@example.test", "gone@example.test")
	m.Delivery = DeliveryPartial
	res, err := c.Send(testCtx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Accepted, []string{"a@example.test", "b@example.test"}) || res.Attempts != 2 {
		t.Errorf("accepted %v after %d attempts", res.Accepted, res.Attempts)
	}
	if len(res.Rejected) != 1 || res.Rejected[0].Address != "gone@example.test" {
		t.Errorf("rejected %v", res.Rejected)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 || !slices.Equal(msgs[0].To, []string{"a@example.test"}) || !slices.Equal(msgs[1].To, []string{"b@example.test"}) {
		t.Fatalf("server got %d messages: %+v", len(msgs), msgs)
	}
	if !bytes.Equal(msgs[0].Data, msgs[1].Data) {
		t.Error("the retry rendered a different message (Message-ID and Date must stay)")
	}
}

// TestRetryKeepsGeneratedID: a message without a Message-ID keeps the one
// generated for its first attempt.
func TestRetryKeepsGeneratedID(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "MAIL", Conn: 1, Nth: 1, Action: mailertest.Reply, Code: 451}))
	c := retrying(t, srv)
	res, err := c.Send(testCtx(t), msgTo("", "to@example.test"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(srv.Messages()[0].Data, []byte("<"+res.MessageID+">")) || res.Attempts != 2 {
		t.Errorf("ID %q, attempts %d", res.MessageID, res.Attempts)
	}
}

// TestRetrySendRawRewinds: a raw message is sent again when its reader
// can seek back, and not when it cannot and was read.
func TestRetrySendRawRewinds(t *testing.T) {
	midBody := mailertest.WithFault(mailertest.Fault{Command: "BDAT", Conn: 1, Nth: 1, Action: mailertest.Drop})
	big := strings.Repeat("0123456789abcdef\r\n", (maxChunk/18)+10)
	srv := newTestServer(t, midBody)
	c := retrying(t, srv)
	res, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(rawBody+big))
	if err != nil || res.Attempts != 2 {
		t.Fatalf("seekable reader: %v %+v", err, res)
	}
	srv2 := newTestServer(t, midBody)
	c2 := retrying(t, srv2)
	_, err = c2.SendRaw(testCtx(t), testEnvelope, io.MultiReader(strings.NewReader(rawBody+big)))
	if err == nil || errors.Is(err, ErrOutcomeUnknown) || count(srv2.Commands(), "MAIL") != 1 {
		t.Fatalf("read-once reader retried or wrong error: %v", err)
	}
}

// TestRetryPauseEndsWithContext: the back-off ends with the context, and
// the send returns the last failure.
func TestRetryPauseEndsWithContext(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply, Code: 451}))
	c := plainConnect(t, srv, WithRetry(RetryPolicy{Attempts: 5, Delay: time.Hour}))
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	_, err := c.SendRaw(ctx, testEnvelope, strings.NewReader(rawBody))
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 451 {
		t.Fatalf("got %v, want the 451", err)
	}
	if st := c.Stats(); st.Retries != 1 || st.FailedTemporary != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestIsTemporary(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{newReply("MAIL", 451, "4.3.0 later"), true},
		{newReply("MAIL", 550, "5.7.1 no"), false},
		{finalReply(newReply("DATA", 451, "4.3.0 later")), true},
		{&RecipientsError{Rejected: []RejectedRecipient{{Err: newReply("RCPT", 451, "")}, {Err: newReply("RCPT", 450, "")}}}, true},
		{&RecipientsError{Rejected: []RejectedRecipient{{Err: newReply("RCPT", 451, "")}, {Err: newReply("RCPT", 550, "")}}}, false},
		{fmt.Errorf("%w: %w", ErrOutcomeUnknown, io.EOF), false},
		{ErrClosed, false},
		{context.Canceled, false},
		{&timeoutError{what: "x", err: context.DeadlineExceeded}, true},
		{fmt.Errorf("mailer: connecting: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), true},
		{fmt.Errorf("mailer: EHLO: %w", io.EOF), true},
		{fmt.Errorf("%w: x", ErrInvalidAddress), false},
		{fmt.Errorf("%w: x", ErrMessageTooLarge), false},
		{fmt.Errorf("%w: x", ErrExtensionUnsupported), false},
		{fmt.Errorf("%w: no STARTTLS", ErrTLSRequired), false},
		{&handshakeError{what: "TLS", err: io.EOF}, true},
		{&handshakeError{what: "TLS", err: fmt.Errorf("x: %w", x509.UnknownAuthorityError{})}, false},
		{&ProxyError{Err: fmt.Errorf("%w: x", ErrProxyUnreachable)}, true},
		{&ProxyError{Err: ErrProxyAuth}, false},
		{&readerError{io.ErrUnexpectedEOF}, false},
		{errors.New("something else"), false},
	}
	for _, tc := range cases {
		if got := IsTemporary(tc.err); got != tc.want {
			t.Errorf("IsTemporary(%v) = %v", tc.err, got)
		}
	}
	if retryable(finalReply(newReply("DATA", 451, "later"))) || retryable(newReply("BDAT", 451, "")) || !retryable(newReply("BDAT", 421, "")) {
		t.Error("retryable: final replies and refused chunks are never retried, a 421 is")
	}
}

// TestDSNParameters: DSN options go out as RFC 3461 parameters, the same
// on the pipelined path and go-smtp's.
func TestDSNParameters(t *testing.T) {
	m := msgTo("dsn@example.test", "a@example.test", "b@example.test")
	m.DSN = &DSN{Return: DSNReturnHeaders, EnvelopeID: "env+1=x", Notify: []DSNNotify{DSNSuccess, DSNFailure},
		Recipients: map[string]DSNRecipient{"b@example.test": {Notify: []DSNNotify{DSNNever}, OriginalRecipient: "list@example.test"}}}
	want := []string{
		"MAIL FROM:<from@example.test> BODY=8BITMIME RET=HDRS ENVID=env+2B1+3Dx",
		"RCPT TO:<a@example.test> NOTIFY=SUCCESS,FAILURE",
		"RCPT TO:<b@example.test> NOTIFY=NEVER ORCPT=RFC822;list@example.test",
	}
	for _, srvOpts := range [][]mailertest.Option{nil, {mailertest.WithoutPipelining()}, {mailertest.WithoutChunking()}} {
		srv := newTestServer(t, append(srvOpts, mailertest.WithDSN())...)
		c := plainConnect(t, srv)
		if _, err := c.Send(testCtx(t), m); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range srv.Commands() {
			if strings.HasPrefix(l, "MAIL") || strings.HasPrefix(l, "RCPT") {
				got = append(got, l)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%d options: got\n%q\nwant\n%q", len(srvOpts), got, want)
		}
	}
	srv := newTestServer(t)
	c := plainConnect(t, srv)
	if _, err := c.Send(testCtx(t), m); !errors.Is(err, ErrExtensionUnsupported) || IsTemporary(err) {
		t.Errorf("DSN to a server without it: %v", err)
	}
	if count(srv.Commands(), "MAIL") != 0 {
		t.Error("MAIL sent for a message the server cannot take")
	}
}

func TestDSNChecked(t *testing.T) {
	bad := []*DSN{
		{Return: "ALL"},
		{EnvelopeID: "has space"},
		{EnvelopeID: strings.Repeat("x", 101)},
		{EnvelopeID: "a\r\nRSET"},
		{Notify: []DSNNotify{DSNNever, DSNFailure}},
		{Notify: []DSNNotify{DSNFailure, DSNFailure}},
		{Notify: []DSNNotify{"SOMETIMES"}},
		{Recipients: map[string]DSNRecipient{"other@example.test": {}}},
		{Recipients: map[string]DSNRecipient{"to@example.test": {OriginalRecipient: "x\r\n@y"}}},
	}
	for _, d := range bad {
		m := msgTo("x@example.test", "to@example.test")
		m.DSN = d
		if err := m.Validate(); err == nil {
			t.Errorf("DSN %+v accepted", d)
		}
		env := testEnvelope
		env.DSN = d
		if err := checkEnvelope(env); err == nil {
			t.Errorf("envelope DSN %+v accepted", d)
		}
	}
	m := msgTo("x@example.test", "to@example.test")
	m.Envelope = &Envelope{From: "a@example.test", To: []string{"b@example.test"}}
	m.RequireTLS = true
	if err := m.Validate(); err == nil {
		t.Error("delivery options on both Message and Envelope accepted")
	}
}

// TestRequireTLS: REQUIRETLS goes out only on a verified TLS session to a
// server that announces it.
func TestRequireTLS(t *testing.T) {
	m := msgTo("rt@example.test", "to@example.test")
	m.RequireTLS = true
	srv := newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithREQUIRETLS())
	if _, err := connect(t, srv).Send(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	if got := srv.Messages(); len(got) != 1 || !got[0].RequireTLS {
		t.Errorf("REQUIRETLS not received: %+v", got)
	}
	refusals := map[string]*Connection{
		"no REQUIRETLS":       connect(t, newTestServer(t, mailertest.WithSTARTTLS())),
		"no TLS":              plainConnect(t, newTestServer(t, mailertest.WithREQUIRETLS())),
		"not verified":        connect(t, srv, WithInsecureSkipVerify()),
		"no TLS at all":       plainConnect(t, newTestServer(t)),
		"optional TLS":        connect(t, newTestServer(t, mailertest.WithREQUIRETLS()), WithSecurity(SecuritySTARTTLSOptional)),
		"no pipelining":       connect(t, newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithoutPipelining())),
		"no REQUIRETLS, DATA": connect(t, newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithoutChunking())),
	}
	for name, c := range refusals {
		if _, err := c.Send(testCtx(t), m); !errors.Is(err, ErrExtensionUnsupported) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if len(srv.Messages()) != 1 {
		t.Error("a refused REQUIRETLS message was sent")
	}
}

// TestDeliveryPolicyPerMessage: a message's policy overrides the
// Connection's in both directions, on Send and SendAll.
func TestDeliveryPolicyPerMessage(t *testing.T) {
	srv := newTestServer(t, mailertest.WithRecipientReply("gone@example.test", 550, "5.1.1", "no"))
	all := plainConnect(t, srv)
	partial := plainConnect(t, srv, WithPartialDelivery())
	m := msgTo("p@example.test", "a@example.test", "gone@example.test")
	m.Delivery = DeliveryPartial
	if res, err := all.Send(testCtx(t), m); err != nil || len(res.Rejected) != 1 {
		t.Errorf("partial on an all-or-nothing Connection: %v", err)
	}
	m.Delivery = DeliveryAllOrNothing
	var re *RecipientsError
	if _, err := partial.Send(testCtx(t), m); !errors.As(err, &re) {
		t.Errorf("all-or-nothing on a partial Connection: %v", err)
	}
	for _, o := range collect(partial.SendAll(testCtx(t), slices.Values([]*Message{m}))) {
		if !errors.As(o.err, &re) {
			t.Errorf("SendAll, all-or-nothing on a partial Connection: %v", o.err)
		}
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages arrived, want 1", n)
	}
}

// holdReader blocks until release is closed, then reads r.
type holdReader struct {
	started chan struct{}
	release chan struct{}
	r       io.Reader
	once    bool
}

func (h *holdReader) Read(p []byte) (int, error) {
	if !h.once {
		h.once = true
		close(h.started)
		<-h.release
	}
	return h.r.Read(p)
}

// TestShutdownDrains: Shutdown refuses new sends at once, lets the one in
// flight finish, QUITs, and leaves no goroutine behind.
func TestShutdownDrains(t *testing.T) {
	srv := newTestServer(t)
	before := runtime.NumGoroutine()
	c := plainConnect(t, srv, WithMaxConnections(2))
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	h := &holdReader{started: make(chan struct{}), release: make(chan struct{}), r: strings.NewReader(rawBody)}
	sent := make(chan error, 1)
	go func() {
		_, err := c.SendRaw(testCtx(t), testEnvelope, h)
		sent <- err
	}()
	<-h.started
	shut := make(chan error, 1)
	go func() { shut <- c.Shutdown(testCtx(t)) }()
	waitFor(t, "Shutdown to start", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.draining
	})
	if _, err := sendRaw(t, c); !errors.Is(err, ErrClosed) {
		t.Errorf("a send after Shutdown started: %v", err)
	}
	close(h.release)
	if err := <-sent; err != nil {
		t.Fatalf("the send in flight: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(srv.Commands(), "QUIT") || len(srv.Messages()) != 1 {
		t.Errorf("commands %q, %d messages: want a QUIT and the message in flight", srv.Commands(), len(srv.Messages()))
	}
	waitFor(t, "the Connection's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestShutdownDeadline: when ctx ends first, Shutdown interrupts like
// Close and returns ctx's error.
func TestShutdownDeadline(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Stall}))
	before := runtime.NumGoroutine()
	c := plainConnect(t, srv, WithIdleTimeout(time.Hour))
	sent := make(chan error, 1)
	go func() {
		_, err := sendRaw(t, c)
		sent <- err
	}()
	waitFor(t, "the message to be sent", func() bool { return count(srv.Commands(), "BDAT") == 1 })
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Millisecond)
	defer cancel()
	if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-sent; !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
		t.Errorf("the interrupted send: %v", err)
	}
	waitFor(t, "the Connection's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestCloseEndsBackgroundWork: sessions idling with their timers and
// sessions being retired leave no goroutine after Close.
func TestCloseEndsBackgroundWork(t *testing.T) {
	srv := newTestServer(t)
	before := runtime.NumGoroutine()
	c := plainConnect(t, srv, WithMaxConnections(4), WithMaxMessagesPerSession(1), WithIdleTimeout(time.Hour))
	for o := range slices.Values(collect(c.SendAll(testCtx(t), slices.Values(streamMsgs(8, nil, nil))))) {
		if o.err != nil {
			t.Fatal(o.err)
		}
	}
	c.Close()
	waitFor(t, "the Connection's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	if _, err := sendRaw(t, c); !errors.Is(err, ErrClosed) {
		t.Errorf("send after Close: %v", err)
	}
}

// TestMessageEvents: each message is one log line with what a service
// needs, and Stats counts it.
func TestMessageEvents(t *testing.T) {
	var buf bytes.Buffer
	srv := newTestServer(t, mailertest.WithRecipientReply("gone@example.test", 550, "5.1.1", "no such user"))
	c := plainConnect(t, srv, WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))))
	if _, err := c.Send(testCtx(t), msgTo("ok@example.test", "to@example.test")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(testCtx(t), msgTo("bad@example.test", "gone@example.test")); err == nil {
		t.Fatal("refused recipient accepted")
	}
	var events []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(e["msg"].(string), "smtp message") {
			events = append(events, e)
		}
	}
	if len(events) != 2 {
		t.Fatalf("%d message events: %v", len(events), events)
	}
	ok, bad := events[0], events[1]
	if ok["msg"] != "smtp message sent" || ok["message_id"] != "ok@example.test" || ok["size"].(float64) < 50 ||
		ok["attempts"].(float64) != 1 || ok["recipients"].(float64) != 1 || ok["duration"] == nil || ok["level"] != "INFO" {
		t.Errorf("sent event: %v", ok)
	}
	if bad["msg"] != "smtp message failed" || bad["class"] != "permanent" || bad["level"] != "WARN" ||
		!strings.Contains(bad["error"].(string), "5.1.1") {
		t.Errorf("failed event: %v", bad)
	}
	if st := c.Stats(); st.Sent != 1 || st.FailedPermanent != 1 || st.SessionsOpened != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestRewinder(t *testing.T) {
	r := &rewinder{r: strings.NewReader("abc")}
	if !r.rewind() {
		t.Error("an unread reader cannot rewind")
	}
	io.ReadAll(r)
	if r.rewind() {
		t.Error("a read-once reader rewound")
	}
	sr := strings.NewReader("xyzabc")
	sr.Seek(3, io.SeekStart)
	r = &rewinder{r: sr, seeker: sr, start: 3}
	io.ReadAll(r)
	if !r.rewind() {
		t.Fatal("a seeker did not rewind")
	}
	if b, _ := io.ReadAll(r); string(b) != "abc" {
		t.Errorf("after rewinding: %q", b)
	}
}

func TestBackoff(t *testing.T) {
	p := RetryPolicy{Attempts: 10, Delay: 100 * time.Millisecond, MaxDelay: time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 9: time.Second} {
		for range 20 {
			if d := p.backoff(n); d < want/2 || d > want {
				t.Errorf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

// TestSendAllRetries: a streamed message that failed in a way that
// delivered nothing is retried alone; the others keep their results and
// order.
func TestSendAllRetries(t *testing.T) {
	for _, srvOpts := range [][]mailertest.Option{nil, {mailertest.WithoutChunking()}, {mailertest.WithoutPipelining()}} {
		// Message 2's end is the third on the session with CHUNKING (the
		// refused message 1 still sends its BDAT LAST), the second without.
		dot := 3
		if len(srvOpts) > 0 {
			dot = 2
		}
		srv := newTestServer(t, append(srvOpts,
			mailertest.WithFault(mailertest.Fault{Command: "MAIL", Conn: 1, Nth: 2, Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0"}),
			mailertest.WithFault(mailertest.Fault{Command: "DOT", Conn: 1, Nth: dot, Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0"}))...)
		c := retrying(t, srv)
		outs := collect(c.SendAll(testCtx(t), slices.Values(streamMsgs(5, nil, nil))))
		if len(outs) != 5 {
			t.Fatalf("%d results", len(outs))
		}
		for i, o := range outs {
			switch {
			case i == 1 && (o.err != nil || o.res.Attempts != 2):
				t.Errorf("%d options: message 1 (451 to MAIL): %v %+v", len(srvOpts), o.err, o.res)
			case i == 2 && !IsTemporary(o.err):
				t.Errorf("%d options: message 2 (451 to its end) was not returned: %v", len(srvOpts), o.err)
			case i != 1 && i != 2 && (o.err != nil || o.res.Attempts != 1 || o.res.MessageID != fmt.Sprintf("m%d@example.test", i)):
				t.Errorf("%d options: message %d: %v %+v", len(srvOpts), i, o.err, o.res)
			}
		}
		if n := len(srv.Messages()); n != 4 {
			t.Errorf("%d options: %d messages arrived, want 4", len(srvOpts), n)
		}
	}
}

// TestDefaultLocalName: without WithLocalName the client gives the
// machine's fully qualified name, else its address literal; a refused
// EHLO says what to set.
func TestDefaultLocalName(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv)
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	want := hostName()
	if want == "" {
		want = "[127.0.0.1]"
	}
	if got := srv.Messages()[0].Helo; got != want {
		t.Errorf("EHLO %q, want %q", got, want)
	}
	refusing := newTestServer(t,
		mailertest.WithFault(mailertest.Fault{Command: "EHLO", Action: mailertest.Reply, Code: 550, Enhanced: "5.7.1", Text: "bad name"}),
		mailertest.WithFault(mailertest.Fault{Command: "HELO", Action: mailertest.Reply, Code: 550, Enhanced: "5.7.1", Text: "bad name"}))
	_, err := sendRaw(t, plainConnect(t, refusing))
	var se *SMTPError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "WithLocalName") {
		t.Errorf("refused EHLO: %v", err)
	}
}

// TestRetryPartialSendRawRewinds: a raw message retried for some of its
// recipients is read again from its start, or, when its reader cannot
// seek, not retried: never sent empty or cut.
func TestRetryPartialSendRawRewinds(t *testing.T) {
	env := Envelope{From: "a@example.test", To: []string{"x@example.test", "y@example.test"}, Delivery: DeliveryPartial}
	for _, seekable := range []bool{true, false} {
		srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "RCPT", Conn: 1, Nth: 2, Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0"}))
		c := retrying(t, srv)
		var r io.Reader = strings.NewReader(rawBody)
		if !seekable {
			r = io.MultiReader(r)
		}
		res, err := c.SendRaw(testCtx(t), env, r)
		if err != nil {
			t.Fatal(err)
		}
		msgs := srv.Messages()
		for _, m := range msgs {
			if string(m.Data) != rawBody {
				t.Errorf("seekable=%v: a copy was sent as %q", seekable, m.Data)
			}
		}
		switch {
		case seekable && (len(msgs) != 2 || len(res.Accepted) != 2 || res.Attempts != 2):
			t.Errorf("seekable: %d copies, %+v", len(msgs), res)
		case !seekable && (len(msgs) != 1 || len(res.Rejected) != 1 || res.Attempts != 1):
			t.Errorf("read once: %d copies, %+v", len(msgs), res)
		}
	}
}

// TestIdleTimerOfAReusedSession: a timer that fired while its session was
// taken, used and put back does not retire the session it finds idle for
// less than the timeout.
func TestIdleTimerOfAReusedSession(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv, WithIdleTimeout(time.Hour))
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	s := c.idle[0]
	c.mu.Unlock()
	c.expire(s) // the old timer's callback, late
	if st := c.Stats(); st.Idle != 1 || st.SessionsRetired != 0 {
		t.Fatalf("a session idle for less than the timeout was retired: %+v", st)
	}
	c.mu.Lock()
	s.idleSince = time.Now().Add(-2 * time.Hour)
	c.mu.Unlock()
	c.expire(s)
	if st := c.Stats(); st.Idle != 0 || st.SessionsRetired != 1 {
		t.Errorf("a session idle past the timeout was kept: %+v", st)
	}
}

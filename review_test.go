package mailer

// Regression tests from an adversarial review of the service, DKIM and
// SendEML code: each TestReview* test failed on the code it was written
// against (its comment says what happened then) and passes since the fix.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

// reviewCtx is a context that ends after d, so that a hang shows up as a
// failure instead of a stuck test binary.
func reviewCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestReviewSendAllRetryDeadlock: SendAll retries a message on its own
// goroutine, which must take a session slot (c.run -> acquire), while
// every slot is held by a worker blocked in stream's take() waiting for
// the next job; the feeder cannot hand it one, because the order buffer
// (maxConns*depth*2) is full and the caller's loop waits for the retried
// message, first in order. So a 451 to the first message's MAIL in a batch
// of more than ~16 messages stalls SendAll until the caller's context ends.
//
// Expected: all 40 messages delivered, message 0 after 2 attempts, well
// within the 10 s context. Actual: nothing moves until the context ends
// (10 s); message 0 then fails with "waiting for a session: context
// deadline exceeded", 16 messages arrived, and only 17 of the 40 are
// yielded at all.
func TestReviewSendAllRetryDeadlock(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "MAIL", Conn: 1, Nth: 1,
		Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: "try later"}))
	c := retrying(t, srv)
	ctx := reviewCtx(t, 10*time.Second)
	start := time.Now()
	outs := collect(c.SendAll(ctx, slices.Values(streamMsgs(40, nil, nil))))
	took := time.Since(start)
	failed := 0
	for i, o := range outs {
		if o.err != nil {
			failed++
			if failed < 3 {
				t.Errorf("message %d: %v", i, o.err)
			}
		}
	}
	if failed > 0 || took > 5*time.Second {
		t.Errorf("%d of %d messages failed, SendAll took %v (the context's end freed it)", failed, len(outs), took)
	}
	if n := len(srv.Messages()); n != 40 {
		t.Errorf("%d messages arrived, want 40", n)
	}
}

// TestReviewCloseInterruptsRateLimitWait: Close "interrupts every operation
// in flight", but a Send waiting for the rate limit waits on the caller's
// context only (attempt.run calls c.limiter.wait(ctx) with the ctx given to
// Send, not one that ends with Close), so it keeps waiting after Close.
//
// Expected: the waiting Send returns ErrClosed within a moment of Close.
// Actual: it returns only when its own context ends (here after 3 s).
func TestReviewCloseInterruptsRateLimitWait(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv, WithRateLimit(1, time.Hour, 1))
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx := reviewCtx(t, 3*time.Second)
	go func() {
		_, err := c.SendRaw(ctx, testEnvelope, strings.NewReader(rawBody))
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the send is waiting for its token
	start := time.Now()
	c.Close()
	err := <-done
	if took := time.Since(start); took > time.Second || !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close returned %v after %v; want ErrClosed at once", err, took)
	}
}

// TestReviewShutdownDeadlineWithRetryPause: Shutdown(ctx) promises to
// return ctx's error once ctx ends, having done what Close does. A Send in
// its retry back-off pauses on the caller's context (policy.pause(ctx)),
// which Close does not end, and Shutdown waits for it (<-drained) after
// its own deadline.
//
// Expected: Shutdown with a 100 ms deadline returns about then.
// Actual: it returns when the back-off (here up to 4 s) is over.
func TestReviewShutdownDeadlineWithRetryPause(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0"}))
	c := plainConnect(t, srv, WithRetry(RetryPolicy{Attempts: 2, Delay: 4 * time.Second, MaxDelay: 4 * time.Second}))
	go c.SendRaw(reviewCtx(t, 10*time.Second), testEnvelope, strings.NewReader(rawBody))
	waitFor(t, "the first attempt to fail", func() bool { return c.Stats().Retries == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Shutdown(ctx)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Shutdown with a 100ms deadline returned %v after %v", err, took)
	}
}

// TestReviewShutdownInsideSendAllLoop: Shutdown called from the body of a
// SendAll loop (a service stopping when it sees a fatal result) never
// returns, even with a deadline: SendAll holds c.active until the loop
// ends, Shutdown waits for c.active, and after its deadline it calls Close
// and then waits for c.active again (<-drained), forever.
//
// Expected: Shutdown returns ctx's error once its 200 ms deadline passes,
// and the loop ends. Actual: it blocks; the test gives up after 3 s.
func TestReviewShutdownInsideSendAllLoop(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv)
	finished := make(chan error, 1)
	go func() {
		for _, err := range c.SendAll(context.Background(), slices.Values(streamMsgs(3, nil, nil))) {
			_ = err
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			finished <- c.Shutdown(ctx)
			cancel()
			break
		}
	}()
	select {
	case err := <-finished:
		if !errors.Is(err, context.DeadlineExceeded) && err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown called inside a SendAll loop did not return within 3 s (its deadline was 200 ms)")
	}
}

// TestReviewSendAllRetrySkipsValidation: SendAll validates a message in
// prepareTx, on a session. When no session can be had (a 421 greeting, a
// refused connection) the job is finished before prepareTx and, if the
// error is retryable, retried through attempt.run with j.st still zero:
// the message is built and sent without ever being validated. A Bcc
// address holding CRLF then goes unchecked into the pipelined RCPT line
// (rcptLine writes the address as it is): SMTP command injection.
//
// Expected: the message fails with ErrHeaderInjection (as Send and a
// SendAll without the fault make it fail) and the server never sees a
// command for evil@example.test. Actual: after the retry, the server
// receives "RCPT TO:<evil@example.test>".
func TestReviewSendAllRetrySkipsValidation(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "GREETING", Conn: 1, Action: mailertest.Reply421}))
	c := retrying(t, srv)
	m := msgTo("inject@example.test", "to@example.test")
	m.Bcc = []Recipient{{Address: "x@example.test>\r\nRCPT TO:<evil@example.test"}}
	outs := collect(c.SendAll(reviewCtx(t, 10*time.Second), slices.Values([]*Message{m})))
	if len(outs) != 1 || !errors.Is(outs[0].err, ErrHeaderInjection) {
		t.Errorf("outcome %+v, want ErrHeaderInjection", outs)
	}
	for _, cmd := range srv.Commands() {
		if strings.Contains(cmd, "evil@") {
			t.Errorf("the server received the injected command %q", cmd)
		}
	}
	for _, msg := range srv.Messages() {
		if slices.Contains(msg.To, "evil@example.test") {
			t.Errorf("delivered to the injected recipient: %v", msg.To)
		}
	}
}

// TestReviewSendAllNilMessagePanics: SendAll documents that an invalid
// message is an error (and Send(nil) is one), but when the session for a
// nil message cannot be had (the server is down), worker calls
// next.finish, whose after builds c.messageSend(j.msg, ...), which reads
// msg.DKIM through the nil pointer, on a worker goroutine: the process
// crashes. Run in a child process so that the crash does not take the
// other tests with it.
//
// Expected: one result, an error. Actual: a nil pointer panic.
func TestReviewSendAllNilMessagePanics(t *testing.T) {
	if os.Getenv("REVIEW_CHILD") == "nil-message" {
		srv := mailertest.NewServer()
		port := srv.Port()
		srv.Close() // nothing listens: every dial is refused
		c, err := NewConnection("127.0.0.1", WithPort(port), WithSecurity(SecurityNone))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, err := range c.SendAll(reviewCtx(t, 10*time.Second), slices.Values([]*Message{nil})) {
			fmt.Println("result:", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReviewSendAllNilMessagePanics$", "-test.count=1")
	cmd.Env = append(os.Environ(), "REVIEW_CHILD=nil-message")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("SendAll of a nil message with the server down crashed: %v\n%s", err, firstLines(string(out), 12))
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// TestReviewSendAllRSETRefusalDuplicates: in a SendAll stream each
// transaction after the first is "RSET, MAIL, RCPT, BDAT ... LAST" in one
// write. When the server answers the RSET with a 4xx but carries out the
// rest (MAIL 250, RCPT 250, BDAT LAST 250: the message is committed),
// readTx stops at the RSET reply and returns it as a fatal error; it is a
// reply, so read() does not make it ErrOutcomeUnknown, and a 451 to RSET
// counts as retryable: the message, already delivered, is sent again.
//
// Expected: every message arrives once (or the second one ends in
// ErrOutcomeUnknown, never retried). Actual: message 1 arrives twice.
func TestReviewSendAllRSETRefusalDuplicates(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "RSET", Conn: 1, Nth: 1,
		Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: "local error"}))
	c := retrying(t, srv)
	outs := collect(c.SendAll(reviewCtx(t, 10*time.Second), slices.Values(streamMsgs(2, nil, nil))))
	ids := map[string]int{}
	for _, m := range srv.Messages() {
		for _, id := range []string{"m0@example.test", "m1@example.test"} {
			if strings.Contains(string(m.Data), "<"+id+">") {
				ids[id]++
			}
		}
	}
	for id, n := range ids {
		if n > 1 {
			t.Errorf("%s delivered %d times; results: %+v %+v", id, n, outs[0], outs[1])
		}
	}
}

// TestReviewSendEMLResentBlockOrder: the topmost resent block is taken to
// be every field before the second Resent-Date. RFC 5322 3.6.6 fixes no
// order inside a block, and a block whose Resent-Date comes last (here
// Resent-From, Resent-To, Resent-Date) puts the older block's Resent-To
// before the second Resent-Date: the message is sent again to the people
// of the earlier resending.
//
// Expected: RCPT to new@example.test only. Actual: also to
// older@example.test, who got the message when it was first resent.
func TestReviewSendEMLResentBlockOrder(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv)
	eml := "Resent-From: r@example.test\nResent-To: new@example.test\nResent-Date: Mon, 1 Dec 2026 10:00:00 +0000\n" +
		"Resent-From: old@example.test\nResent-To: older@example.test\nResent-Date: Sun, 30 Nov 2026 10:00:00 +0000\n" +
		"From: a@example.test\nTo: b@example.test\nSubject: x\n\nbody\n"
	if _, err := c.SendEML(testCtx(t), strings.NewReader(eml)); err != nil {
		t.Fatal(err)
	}
	m := srv.Messages()[0]
	if m.From != "r@example.test" || !slices.Equal(m.To, []string{"new@example.test"}) {
		t.Errorf("envelope %s -> %v, want r@example.test -> [new@example.test]", m.From, m.To)
	}
}

// TestReviewStatsSessionsBalance: Stats says SessionsClosed counts closed
// sessions, HealthChecksFailed being some of them. A pooled session found
// dead by the health check is closed in acquire (s.close()) without
// sessionsClosed.Add, and the idle sessions that Close QUITs are not
// counted either, so SessionsOpened - SessionsClosed no longer gives the
// sessions open.
//
// Expected: after a failed health check, Opened - Closed == Idle (1); after
// Close, Opened == Closed. Actual: Closed lags by one in each case.
func TestReviewStatsSessionsBalance(t *testing.T) {
	// The health check runs before every reuse, and the server drops the
	// connection at NOOP.
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "NOOP", Action: mailertest.Drop}))
	c := plainConnect(t, srv, WithIdleTimeout(0), WithHealthCheck(time.Nanosecond))
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.HealthChecksFailed != 1 {
		t.Fatalf("the health check did not run: %+v", st)
	}
	if st.SessionsOpened-st.SessionsClosed != int64(st.Idle) {
		t.Errorf("after a failed health check: opened %d, closed %d, idle %d (HealthChecksFailed %d not counted as closed)",
			st.SessionsOpened, st.SessionsClosed, st.Idle, st.HealthChecksFailed)
	}
	c.Close()
	if st := c.Stats(); st.SessionsOpened != st.SessionsClosed {
		t.Errorf("after Close: opened %d, closed %d", st.SessionsOpened, st.SessionsClosed)
	}
}

// TestReviewRetryAttachReader: a Message with an AttachReader attachment
// whose reader was consumed by the first attempt is retried anyway
// (deliver gets rewind == nil for Send); the second rendering fails with
// "its reader was already read", which replaces the first attempt's
// temporary error. With WithDKIM the reader is consumed at build time (to
// the spool, closed after each attempt), so even a 451 to MAIL, before any
// data, turns into that permanent-looking error although the content was
// held in the spool. Without DKIM the same happens with CHUNKING, whose
// data goes before MAIL's reply.
//
// Expected: either the retry succeeds with the attachment intact, or the
// send returns the 451 (IsTemporary true). Actual: a readerError or the
// "already read" error, IsTemporary false, counted in FailedPermanent.
func TestReviewRetryAttachReader(t *testing.T) {
	sigs, _ := testSigs(t)
	for _, dkim := range []bool{true, false} {
		t.Run(fmt.Sprintf("dkim=%v", dkim), func(t *testing.T) {
			srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "MAIL", Conn: 1, Nth: 1, Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0"}))
			var opts []Option
			if dkim {
				opts = append(opts, WithDKIM(sigs...))
			}
			c := retrying(t, srv, opts...)
			m := msgTo("reader@example.test", "to@example.test")
			m.AttachReader("report.txt", strings.NewReader("the only copy of the report"))
			res, err := c.Send(testCtx(t), m)
			var se *SMTPError
			switch {
			case err == nil:
				if msgs := srv.Messages(); len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "dGhlIG9ubHkgY29weSBvZiB0aGUgcmVwb3J0") {
					t.Errorf("retried without the attachment's content (%d messages)", len(msgs))
				}
				_ = res
			case !IsTemporary(err) || !errors.As(err, &se) || se.Code != 451:
				t.Errorf("got %v (IsTemporary %v), want the 451 or a successful retry; stats %+v", err, IsTemporary(err), c.Stats())
			}
		})
	}
}

// TestReviewSendAllRateLimitIdlesSession: SendAll takes a session (dial,
// EHLO) before it waits for the rate limit (worker acquires, then stream
// calls admit), and nothing checks the session after the wait. When the
// wait is longer than the server's idle timeout (a slow limit, or one the
// adaptive rule slowed down to 1/64 of its rate) the server has closed the
// session ("421 4.4.2 Idle timeout") by the time the message goes, on every
// path: every message after the first fails. Send waits before taking a
// session and has no such problem.
//
// Expected: the 2 messages are delivered (the rate limit only delays
// them). Actual: the second fails with "421 4.4.2 Idle timeout" (RSET or
// MAIL), with CHUNKING, DATA and without PIPELINING alike.
func TestReviewSendAllRateLimitIdlesSession(t *testing.T) {
	for _, srvOpts := range [][]mailertest.Option{nil, {mailertest.WithoutChunking()}, {mailertest.WithoutPipelining()}} {
		srv := newTestServer(t, append(srvOpts, mailertest.WithIdleTimeout(200*time.Millisecond))...)
		c := plainConnect(t, srv, WithRateLimit(1, 700*time.Millisecond, 1))
		for i, o := range collect(c.SendAll(testCtx(t), slices.Values(streamMsgs(2, nil, nil)))) {
			if o.err != nil {
				t.Errorf("server options %d: message %d: %v", len(srvOpts), i, o.err)
			}
		}
	}
}

// TestReviewCalendarMethodTricks: Calendar.check takes the first line
// that reads "METHOD:" after trimming, so a folded continuation line of
// another property (" METHOD:REQUEST", RFC 5545 3.1) counts as the METHOD
// property, and a second, different METHOD is never looked at. The part
// then says method=REQUEST while the calendar's METHOD is CANCEL: a
// client shows an invitation for what the organiser's calendar says is a
// cancellation (or the reverse).
//
// Expected: Validate refuses both calendars. Actual: both are accepted.
func TestReviewCalendarMethodTricks(t *testing.T) {
	folded := strings.Replace(testICS, "PRODID:-//example//test//EN\r\nMETHOD:REQUEST\r\n",
		"PRODID:-//example//test//EN\r\n METHOD:REQUEST\r\nMETHOD:CANCEL\r\n", 1)
	twice := strings.Replace(testICS, "METHOD:REQUEST\r\n", "METHOD:REQUEST\r\nMETHOD:CANCEL\r\n", 1)
	for name, data := range map[string]string{"folded continuation": folded, "two METHODs": twice} {
		m := msgTo("cal@example.test", "to@example.test")
		m.Calendar = &Calendar{Method: "REQUEST", Data: []byte(data)}
		if err := m.Validate(); err == nil {
			t.Errorf("%s: a calendar whose METHOD is CANCEL was accepted as a REQUEST", name)
		}
	}
}

// TestReviewDSNDroppedForIDNRecipient: DSN.check matches DSN.Recipients
// keys to recipients with the domain case-folded, but when the server
// lacks SMTPUTF8 and the domain is converted to punycode, renamed looks
// the key up exactly, finds nothing, and rcptOptions then compares the
// key's Unicode domain with the punycode one: the recipient's NOTIFY and
// ORCPT are silently dropped, which the docs say never happens.
//
// Expected: "RCPT TO:<user@xn--bcher-kva.example> NOTIFY=SUCCESS,FAILURE".
// Actual: the RCPT carries no NOTIFY.
func TestReviewDSNDroppedForIDNRecipient(t *testing.T) {
	srv := newTestServer(t, mailertest.WithDSN())
	c := plainConnect(t, srv)
	m := msgTo("dsn@example.test", "user@bücher.example")
	m.DSN = &DSN{Recipients: map[string]DSNRecipient{"user@Bücher.example": {Notify: []DSNNotify{DSNSuccess, DSNFailure}}}}
	if _, err := c.Send(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	var rcpt string
	for _, cmd := range srv.Commands() {
		if strings.HasPrefix(cmd, "RCPT") {
			rcpt = cmd
		}
	}
	if !strings.Contains(rcpt, "NOTIFY=SUCCESS,FAILURE") {
		t.Errorf("RCPT sent as %q: the recipient's DSN options were dropped", rcpt)
	}
}

// TestReviewPartialRetrySendRawNotRewound: attempt.finish calls rewind
// only while nothing was delivered (total == nil); a partial-delivery
// retry of the recipients refused with 4xx runs without rewinding the
// SendRaw (or SendEML) reader, which the first attempt read to its end.
// The retry sends what is left, nothing, and the server delivers an empty
// message to the retried recipient; with a read-once reader the same
// happens, where the retry should not be made at all.
//
// Expected: b@example.test receives the same message as a@example.test
// (seekable reader), or is reported refused and never sent an empty
// message (read-once reader). Actual: an empty message is delivered to
// b@example.test in both cases.
func TestReviewPartialRetrySendRawNotRewound(t *testing.T) {
	for _, seekable := range []bool{true, false} {
		t.Run(fmt.Sprintf("seekable=%v", seekable), func(t *testing.T) {
			srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "RCPT", Conn: 1, Nth: 2,
				Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: "later"}))
			c := retrying(t, srv)
			env := Envelope{From: "from@example.test", To: []string{"a@example.test", "b@example.test"}, Delivery: DeliveryPartial}
			var r io.Reader = strings.NewReader(rawBody)
			if !seekable {
				r = io.MultiReader(r)
			}
			res, err := c.SendRaw(testCtx(t), env, r)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range srv.Messages() {
				if string(m.Data) != rawBody {
					t.Errorf("message to %v: %q (want the whole message); result %+v", m.To, m.Data, res)
				}
			}
		})
	}
}

// TestReviewStaleSessionDKIMAttachReader: a pooled session found dead
// before anything was sent (staleError, here the server's idle-timeout 421
// seen by the probe) is replaced and the transaction built again, even
// without WithRetry (deterministically so without PIPELINING, where the
// 421 comes back as MAIL's reply and send returns staleError). With DKIM, a message with an AttachReader attachment
// is read into a spool when the transaction is built, and the spool is
// released after that first try; the rebuild reads the reader again and
// fails. So with the default options a signed message with a streamed
// attachment fails whenever its pooled session went stale.
//
// Expected: the message is sent on a new session (as it is without DKIM).
// Actual: "attachment ...: its reader was already read".
func TestReviewStaleSessionDKIMAttachReader(t *testing.T) {
	sigs, records := testSigs(t)
	srv := newTestServer(t, mailertest.WithIdleTimeout(200*time.Millisecond), mailertest.WithoutPipelining())
	c := plainConnect(t, srv, WithDKIM(sigs...))
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the server closes the pooled session
	m := msgTo("stale@example.test", "to@example.test")
	m.AttachReader("report.txt", strings.NewReader("the only copy of the report"))
	if _, err := c.Send(testCtx(t), m); err != nil {
		t.Fatalf("Send on a stale pooled session: %v", err)
	}
	msgs := srv.Messages()
	verifyDKIM(t, msgs[len(msgs)-1].Data, records, 2)
}

// TestReviewProbeMissesClosedSession: before a pipelined transaction on a
// session idle for over a second, probe peeks at the socket with a read
// deadline 1 µs ahead. Go's poller fails a read whose deadline has already
// passed without looking at the socket, so the peek usually times out
// before it reads the 421 (or the EOF) waiting there, and the session is
// taken as alive: MAIL, RCPT and the whole message are written to a server
// that has gone. With a 421 waiting, Send fails with "MAIL: 421" although
// "a pooled session found dead is replaced even without WithRetry"; with a
// silent close, the EOF after the message would be ErrOutcomeUnknown for a
// message nobody received. Timing-dependent: it fails nearly every time
// under -race, rarely without.
//
// Expected: both sends succeed, the second on a new session. Actual:
// "mailer: MAIL: 421 4.4.2 Idle timeout, bye bye".
func TestReviewProbeMissesClosedSession(t *testing.T) {
	for _, srvOpts := range [][]mailertest.Option{nil, {mailertest.WithoutChunking()}} {
		srv := newTestServer(t, append(srvOpts, mailertest.WithIdleTimeout(200*time.Millisecond))...)
		c := plainConnect(t, srv)
		if _, err := sendRaw(t, c); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // idle past the server's timeout and probeAfter
		if _, err := sendRaw(t, c); err != nil {
			t.Errorf("server options %d: Send on a pooled session the server closed: %v", len(srvOpts), err)
		}
	}
}

// TestReviewSpoolLeakedWhenRateLimitEnds: on a server without PIPELINING,
// SendAll's stream prepares a transaction (which, with DKIM and a
// read-once attachment, spools the message to a temporary file) and only
// then waits for the rate limit; when that wait ends with the context,
// admit fails and the loop goes on without tx.done(): the spool's file
// stays open (unlinked, so invisible in /tmp, but holding its disk space
// and a descriptor) until a garbage collection happens to finalise it.
//
// Expected: no descriptor open on a mailer-spool file once SendAll has
// returned. Actual: one is.
func TestReviewSpoolLeakedWhenRateLimitEnds(t *testing.T) {
	sigs, _ := testSigs(t)
	srv := newTestServer(t, mailertest.WithoutPipelining())
	c := plainConnect(t, srv, WithDKIM(sigs...), WithRateLimit(1, time.Hour, 1))
	var msgs []*Message
	for i := range 2 {
		m := msgTo(fmt.Sprintf("spool%d@example.test", i), "to@example.test")
		m.AttachReader("big.bin", &endless{left: 2 << 20})
		msgs = append(msgs, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	outs := collect(c.SendAll(ctx, slices.Values(msgs)))
	if len(outs) != 2 || outs[0].err != nil || outs[1].err == nil {
		t.Fatalf("outcomes %v", outs)
	}
	if open := spoolFiles(t); len(open) > 0 {
		t.Errorf("spool files still open after SendAll returned: %v", open)
	}
}

// spoolFiles lists this process's open descriptors on spool files.
func spoolFiles(t *testing.T) []string {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	var out []string
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.Contains(target, "mailer-spool-") {
			out = append(out, target)
		}
	}
	return out
}

// TestReviewStreamUnsentMessageReportedUnknown: when a stream's session
// dies (here the server drops the connection after message 0's data)
// while the writer is waiting for the rate limit, the writer, once
// admitted, buffers message 1 (marking its end written) without checking
// that the session is dead; the flush then fails and the reader abandons
// it with ErrOutcomeUnknown, as if its end had reached the server. Not a
// byte of message 1 was written to the socket: it provably was not
// delivered, and a retry would have been safe.
//
// Expected: message 0 ErrOutcomeUnknown (correct), message 1 delivered on
// a new session (or at least a retryable error). Actual: message 1 fails
// with ErrOutcomeUnknown and is not retried.
func TestReviewStreamUnsentMessageReportedUnknown(t *testing.T) {
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "DOT", Conn: 1, Nth: 1, Action: mailertest.Drop}))
	c := retrying(t, srv, WithRateLimit(1, 300*time.Millisecond, 1))
	outs := collect(c.SendAll(testCtx(t), slices.Values(streamMsgs(2, nil, nil))))
	if len(outs) != 2 {
		t.Fatalf("%d results", len(outs))
	}
	if !errors.Is(outs[0].err, ErrOutcomeUnknown) {
		t.Errorf("message 0: %v, want ErrOutcomeUnknown", outs[0].err)
	}
	if outs[1].err != nil {
		t.Errorf("message 1, never written to the socket (the server saw %d MAIL): %v", count(srv.Commands(), "MAIL"), outs[1].err)
	}
}

// TestReviewSendAllStatsMissSessionRefusals: a message the session cannot
// take (a DSN the server does not announce, too large for its SIZE, a
// UTF-8 address without SMTPUTF8) fails in prepareTx's s.check and is
// ended with j.refuse, which settles it without the report that counts it
// in Stats and logs it. Send counts the same failure in FailedPermanent.
//
// Expected: FailedPermanent 1 after SendAll's failure, as after Send's.
// Actual: 0 after SendAll (and no "smtp message failed" event).
func TestReviewSendAllStatsMissSessionRefusals(t *testing.T) {
	m := func() *Message {
		m := msgTo("dsn-stats@example.test", "to@example.test")
		m.DSN = &DSN{Notify: []DSNNotify{DSNFailure}}
		return m
	}
	srv := newTestServer(t) // no DSN announced
	c := plainConnect(t, srv)
	if _, err := c.Send(testCtx(t), m()); !errors.Is(err, ErrExtensionUnsupported) {
		t.Fatalf("Send: %v", err)
	}
	if st := c.Stats(); st.FailedPermanent != 1 {
		t.Fatalf("Send: stats %+v", st)
	}
	c2 := plainConnect(t, srv)
	outs := collect(c2.SendAll(testCtx(t), slices.Values([]*Message{m()})))
	if len(outs) != 1 || !errors.Is(outs[0].err, ErrExtensionUnsupported) {
		t.Fatalf("SendAll: %v", outs)
	}
	if st := c2.Stats(); st.FailedPermanent != 1 {
		t.Errorf("SendAll: FailedPermanent %d, want 1 as for Send (stats %+v)", st.FailedPermanent, st)
	}
}

// TestReviewStaleRerunTruncatesSendRaw: Connection.run runs a transaction
// again on a new session when the pooled one turns out dead before any
// reply (staleError). With CHUNKING the first chunk of the body is read
// from the caller's reader and written before the first reply is read, so
// a pooled session that the server dropped (no 421, no probe: it idled
// under a second) is reported stale after part of a SendRaw body was
// consumed; run calls the build again without rewinding the reader, and
// the new session sends what is left: the message arrives without its
// header and first ~256 KiB, and SendRaw reports success. (No WithRetry
// needed; Send with AttachReader gets "already read" on the same path.)
//
// Expected: the server receives the whole message, or SendRaw fails.
// Actual: a truncated message is delivered and SendRaw returns nil.
func TestReviewStaleRerunTruncatesSendRaw(t *testing.T) {
	for _, seekable := range []bool{true, false} {
		t.Run(fmt.Sprintf("seekable=%v", seekable), func(t *testing.T) {
			srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "MAIL", Conn: 1, Nth: 2, Action: mailertest.Drop}))
			c := plainConnect(t, srv)
			if _, err := sendRaw(t, c); err != nil {
				t.Fatal(err)
			}
			big := rawBody + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 16<<10)
			var r io.Reader = strings.NewReader(big)
			if !seekable {
				r = io.MultiReader(r)
			}
			_, err := c.SendRaw(testCtx(t), testEnvelope, r)
			msgs := srv.Messages()
			if err == nil && (len(msgs) != 2 || string(msgs[1].Data) != big) {
				got := []byte{}
				if len(msgs) == 2 {
					got = msgs[1].Data
				}
				t.Errorf("SendRaw succeeded but the server got %d of %d bytes, starting %q", len(got), len(big), got[:min(len(got), 40)])
			}
		})
	}
}

// TestReviewSendEMLLongHeaderLine: SendEML documents that a header larger
// than 1 MiB is an error, but readEMLHeader reads lines with ReadSlice on
// a bufio.Reader of the default 4096 bytes, so any header line over 4 KiB
// (a long unfolded To or References line, common in generated mail) fails
// with ErrBufferFull, reported as "longer than 1048576 bytes".
//
// Expected: a message whose header has one 6000-byte line, far below the
// documented 1 MiB bound, is sent (or refused with an error naming the
// real limit: RFC 5322 caps lines at 998, which the doc does not say is
// enforced). Actual: "mailer: SendEML: a header line or the header is
// longer than 1048576 bytes". Low severity.
func TestReviewSendEMLLongHeaderLine(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv)
	refs := strings.TrimSpace(strings.Repeat("<0123456789abcdef0123456789abcdef@example.test> ", 125))
	eml := "From: a@example.test\nTo: b@example.test\nReferences: " + refs + "\nSubject: x\n\nbody\n"
	if _, err := c.SendEML(testCtx(t), strings.NewReader(eml)); err != nil {
		t.Errorf("a %d-byte header line: %v", len("References: ")+len(refs), err)
	}
}

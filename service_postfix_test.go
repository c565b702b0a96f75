package mailer

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/internal/testenv"
)

// svcTag returns a random tag that makes this run's addresses and IDs
// unique in the shared Maildir and log.
func svcTag() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// svcMessage returns a message from from to the addresses to, with its own
// Message-ID.
func svcMessage(from, subject string, to ...string) *Message {
	m := &Message{From: Recipient{Address: from}, Subject: subject, Text: "Service test: " + subject + ".\n",
		MessageID: "svc-" + svcTag() + "@example.test"}
	for _, a := range to {
		m.To = append(m.To, Recipient{Address: a})
	}
	return m
}

// svcFiles returns the delivered files that contain needle now.
func svcFiles(env *testenv.PostfixEnv, needle string) [][]byte {
	var out [][]byte
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(env.Maildir, sub, "*"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(needle)) {
				out = append(out, b)
			}
		}
	}
	return out
}

// svcWaitFile polls the Maildir until a delivered file contains every
// needle and none of the excluded strings, and returns it.
func svcWaitFile(t *testing.T, env *testenv.PostfixEnv, needles, exclude []string, timeout time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
	files:
		for _, b := range svcFiles(env, needles[0]) {
			for _, n := range needles[1:] {
				if !bytes.Contains(b, []byte(n)) {
					continue files
				}
			}
			for _, x := range exclude {
				if bytes.Contains(b, []byte(x)) {
					continue files
				}
			}
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("no delivered file contains %q (without %q) after %v; Postfix log:\n%s", needles, exclude, timeout, svcLogTail(env))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// svcLogTail returns the end of Postfix's log, for failure messages.
func svcLogTail(env *testenv.PostfixEnv) string {
	b, _ := os.ReadFile(env.Log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// svcLogLines returns the lines of Postfix's log.
func svcLogLines(t *testing.T, env *testenv.PostfixEnv) []string {
	t.Helper()
	b, err := os.ReadFile(env.Log)
	if err != nil {
		t.Fatalf("reading Postfix's log: %v", err)
	}
	return strings.Split(string(b), "\n")
}

// svcWaitLog polls Postfix's log (written asynchronously by postlogd)
// until ok is true of its lines, and returns them.
func svcWaitLog(t *testing.T, env *testenv.PostfixEnv, what string, ok func([]string) bool, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lines := svcLogLines(t, env)
		if ok(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix's log does not show %s after %v:\n%s", what, timeout, svcLogTail(env))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// svcCount counts the lines that contain every one of parts.
func svcCount(lines []string, parts ...string) int {
	n := 0
lines:
	for _, l := range lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		n++
	}
	return n
}

// svcFence sends a message to ok@ on c and waits until Postfix delivered
// it and logged its delivery: whatever Postfix queued before it (a
// duplicate, a log line) is in the Maildir or the log by then, give or
// take the order of parallel deliveries.
func svcFence(t *testing.T, env *testenv.PostfixEnv, c *Connection) {
	t.Helper()
	fence := svcMessage("fence-"+svcTag()+"@example.test", "fence", "ok@example.test")
	if _, err := c.Send(testCtx(t), fence); err != nil {
		t.Fatalf("fence: %v", err)
	}
	svcWaitFile(t, env, []string{fence.MessageID}, nil, 30*time.Second)
	if env.Log != "" {
		svcWaitLog(t, env, "the fence's delivery", func(l []string) bool {
			return svcCount(l, "from=<"+fence.From.Address+">") > 0 && svcCount(l, "status=sent") > 0 &&
				svcCount(l, "message-id=<"+fence.MessageID+">") > 0
		}, 30*time.Second)
	}
}

// TestPostfixServiceRetryRules sends one message with partial delivery
// and WithRetry (3 attempts) to ok@, tempfail@ (451 4.3.0) and reject@
// (550 5.1.1) through the real Postfix: ok@ gets it once, tempfail@ is
// tried three times in all, reject@ once.
func TestPostfixServiceRetryRules(t *testing.T) {
	env := testenv.Postfix(t)
	var transcript bytes.Buffer
	c, err := NewConnection(env.Plain, WithSecurity(SecurityNone), WithDebugWriter(&transcript, false),
		WithRetry(RetryPolicy{Attempts: 3, Delay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	from := "svc-retry-" + svcTag() + "@example.test"
	msg := svcMessage(from, "retry rules", "ok@example.test", "tempfail@example.test", "reject@example.test")
	msg.Delivery = DeliveryPartial
	res, err := c.Send(testCtx(t), msg)
	if err != nil {
		t.Fatalf("%v\n%s", err, transcript.String())
	}
	if !slices.Equal(res.Accepted, []string{"ok@example.test"}) || res.Attempts != 3 || res.MessageID != msg.MessageID {
		t.Errorf("result %+v: want Accepted [ok@], 3 attempts, Message-ID %s", res, msg.MessageID)
	}
	refused := map[string]*SMTPError{}
	for _, r := range res.Rejected {
		var se *SMTPError
		if !errors.As(r.Err, &se) {
			t.Errorf("%s refused with %v, want an SMTP reply", r.Address, r.Err)
			continue
		}
		if refused[r.Address] != nil {
			t.Errorf("%s listed twice in Rejected", r.Address)
		}
		refused[r.Address] = se
	}
	if se := refused["tempfail@example.test"]; len(res.Rejected) != 2 || se == nil || se.Code != 451 ||
		se.EnhancedCode != (EnhancedCode{4, 3, 0}) || !IsTemporary(se) {
		t.Errorf("Rejected %+v: want tempfail@ with 451 4.3.0", res.Rejected)
	}
	if se := refused["reject@example.test"]; se == nil || se.Code != 550 || se.EnhancedCode != (EnhancedCode{5, 1, 1}) || IsTemporary(se) {
		t.Errorf("Rejected %+v: want reject@ with 550 5.1.1", res.Rejected)
	}
	// The client's side: three transactions; reject@ in the first only.
	tr := transcript.String()
	if n := strings.Count(tr, "C: MAIL FROM:<"+from+">"); n != 3 {
		t.Errorf("%d MAIL commands, want 3:\n%s", n, tr)
	}
	if n, m := strings.Count(tr, "C: RCPT TO:<tempfail@example.test>"), strings.Count(tr, "C: RCPT TO:<reject@example.test>"); n != 3 || m != 1 {
		t.Errorf("RCPT to tempfail@ %d times (want 3), to reject@ %d times (want 1):\n%s", n, m, tr)
	}
	if n := strings.Count(tr, "C: RCPT TO:<ok@example.test>"); n != 1 {
		t.Errorf("RCPT to ok@ %d times, want 1", n)
	}
	if st := c.Stats(); st.Retries != 2 || st.Sent != 1 {
		t.Errorf("Stats %+v: want 2 retries, 1 sent", st)
	}

	// Delivered once: after it arrived, and after a later message did.
	svcWaitFile(t, env, []string{msg.MessageID}, nil, 30*time.Second)
	svcFence(t, env, c)
	if n := len(svcFiles(env, "<"+msg.MessageID+">")); n != 1 {
		t.Errorf("%d copies of the message in the Maildir, want 1", n)
	}
	if env.Log == "" {
		t.Log("MAILER_TEST_POSTFIX_LOG unset: Postfix's log not checked")
		return
	}
	// Postfix logs each refused RCPT with the sender: tempfail@ three
	// times, reject@ once; and queues the message once.
	lines := svcLogLines(t, env)
	fromPart := "from=<" + from + ">"
	if n := svcCount(lines, "reject: RCPT from", "451 4.3.0 <tempfail@example.test>", fromPart); n != 3 {
		t.Errorf("Postfix logged %d refusals of tempfail@ for this sender, want 3", n)
	}
	if n := svcCount(lines, "reject: RCPT from", "550 5.1.1 <reject@example.test>", fromPart); n != 1 {
		t.Errorf("Postfix logged %d refusals of reject@ for this sender, want 1", n)
	}
	if n := svcCount(lines, "message-id=<"+msg.MessageID+">"); n != 1 {
		t.Errorf("Postfix queued the message %d times, want 1", n)
	}
	if n := svcCount(lines, "to=<ok@example.test>", "status=sent"); n == 0 {
		t.Error("Postfix logged no delivery to ok@")
	}
}

// TestPostfixServiceTemporaryOnly sends all-or-nothing to tempfail@ alone
// with two attempts: both refused with 451, the error is a temporary
// *RecipientsError after one retry, and nothing is queued.
func TestPostfixServiceTemporaryOnly(t *testing.T) {
	env := testenv.Postfix(t)
	c, err := NewConnection(env.Plain, WithSecurity(SecurityNone),
		WithRetry(RetryPolicy{Attempts: 2, Delay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	from := "svc-temp-" + svcTag() + "@example.test"
	msg := svcMessage(from, "temporary only", "tempfail@example.test")
	res, err := c.Send(testCtx(t), msg)
	var re *RecipientsError
	if !errors.As(err, &re) || !IsTemporary(err) || res != nil {
		t.Fatalf("res %+v, err %v (temporary %v): want a temporary *RecipientsError", res, err, IsTemporary(err))
	}
	var se *SMTPError
	if len(re.Rejected) != 1 || re.Rejected[0].Address != "tempfail@example.test" || !errors.As(re.Rejected[0].Err, &se) || se.Code != 451 {
		t.Errorf("refusals %+v: want tempfail@ with 451", re.Rejected)
	}
	if st := c.Stats(); st.Retries != 1 || st.FailedTemporary != 1 || st.Sent != 0 || st.FailedPermanent != 0 {
		t.Errorf("Stats %+v: want 1 retry, 1 temporary failure", st)
	}
	if env.Log != "" {
		lines := svcWaitLog(t, env, "two refusals of tempfail@", func(l []string) bool {
			return svcCount(l, "451 4.3.0 <tempfail@example.test>", "from=<"+from+">") >= 2
		}, 10*time.Second)
		if n := svcCount(lines, "451 4.3.0 <tempfail@example.test>", "from=<"+from+">"); n != 2 {
			t.Errorf("Postfix logged %d refusals, want 2", n)
		}
		if n := svcCount(lines, "message-id=<"+msg.MessageID+">"); n != 0 {
			t.Errorf("Postfix queued the message %d times, want 0", n)
		}
	}
}

// TestPostfixServiceDSN asks for a success notification (NOTIFY=SUCCESS,
// ENVID, RET=HDRS) on a message to a catch-all address, from a catch-all
// address, with CHUNKING (BDAT) and without (DATA): the message arrives,
// and so does Postfix's notification to the sender, quoting the envelope
// ID.
func TestPostfixServiceDSN(t *testing.T) {
	env := testenv.Postfix(t)
	for _, tc := range []struct{ name, addr, end string }{{"chunking", env.Plain, "BDAT"}, {"nochunk", env.NoChunk, "DATA"}} {
		t.Run(tc.name, func(t *testing.T) {
			var transcript bytes.Buffer
			c, err := NewConnection(tc.addr, WithSecurity(SecurityNone), WithDebugWriter(&transcript, false))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tag := svcTag()
			from := "svc-dsn-" + tag + "@example.test"
			envid := "<svc-envid-" + tag + "@example.test>"
			msg := svcMessage(from, "dsn "+tc.name, "dsn-rcpt-"+tag+"@example.test")
			msg.DSN = &DSN{Notify: []DSNNotify{DSNSuccess}, EnvelopeID: envid, Return: DSNReturnHeaders}
			res, err := c.Send(testCtx(t), msg)
			if err != nil {
				t.Fatalf("%v\n%s", err, transcript.String())
			}
			if !c.HasExtension("DSN") {
				t.Errorf("Postfix does not announce DSN: %v", c.Extensions())
			}
			tr := transcript.String()
			if !strings.Contains(tr, "C: MAIL FROM:<"+from+"> BODY=8BITMIME") || !strings.Contains(tr, " RET=HDRS ENVID="+envid) ||
				!strings.Contains(tr, "C: RCPT TO:<dsn-rcpt-"+tag+"@example.test> NOTIFY=SUCCESS") || !strings.Contains(tr, "C: "+tc.end) {
				t.Errorf("the transcript lacks the DSN parameters or %s:\n%s", tc.end, tr)
			}
			// The message itself (not the notification, which quotes its
			// header).
			got := svcWaitFile(t, env, []string{"<" + res.MessageID + ">"}, []string{"Original-Envelope-Id"}, 30*time.Second)
			if !bytes.Contains(got, []byte("Subject: dsn "+tc.name)) {
				t.Errorf("delivered file:\n%s", got)
			}
			// The notification, to the sender.
			dsn := svcWaitFile(t, env, []string{"Original-Envelope-Id: " + envid}, nil, 30*time.Second)
			for _, want := range []string{"To: " + from, "Action: delivered", "Status: 2.", "Content-Type: multipart/report; report-type=delivery-status",
				"Final-Recipient: rfc822; dsn-rcpt-" + tag + "@example.test", "<" + res.MessageID + ">"} {
				if !bytes.Contains(dsn, []byte(want)) {
					t.Errorf("the notification lacks %q:\n%s", want, dsn)
				}
			}
			if bytes.Contains(dsn, []byte(msg.Text)) {
				t.Errorf("RET=HDRS, but the notification carries the body:\n%s", dsn)
			}
		})
	}
}

// TestPostfixServiceRequireTLS sends a message with RequireTLS through
// Postfix's submission port (STARTTLS, a verified certificate, SASL):
// Postfix 3.7 does not announce REQUIRETLS, so the send fails with
// ErrExtensionUnsupported before MAIL, and nothing arrives.
func TestPostfixServiceRequireTLS(t *testing.T) {
	env := testenv.Postfix(t)
	var transcript bytes.Buffer
	c, err := NewConnection(env.Submission, WithSecurity(SecuritySTARTTLS), WithTLSConfig(&tls.Config{RootCAs: env.CAPool}),
		WithCredentials(env.User, env.Password), WithDebugWriter(&transcript, false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	from := "svc-requiretls-" + svcTag() + "@example.test"
	msg := svcMessage(from, "requiretls", "someone@example.test")
	msg.RequireTLS = true
	res, err := c.Send(testCtx(t), msg)
	if !errors.Is(err, ErrExtensionUnsupported) || IsTemporary(err) || res != nil {
		t.Fatalf("res %+v, err %v: want ErrExtensionUnsupported, permanent", res, err)
	}
	if !strings.Contains(err.Error(), "REQUIRETLS") {
		t.Errorf("error %q does not name REQUIRETLS", err)
	}
	if _, ok := c.TLSConnectionState(); !ok {
		t.Error("the session was not TLS: the refusal must be about the extension, not the encryption")
	}
	if c.HasExtension("REQUIRETLS") {
		t.Errorf("Postfix announces REQUIRETLS (%v): the premise of this test no longer holds", c.Extensions())
	}
	tr := transcript.String()
	if !strings.Contains(tr, "C: STARTTLS") || !strings.Contains(tr, "C: AUTH ") || strings.Contains(tr, "MAIL FROM") {
		t.Errorf("want STARTTLS and AUTH but no MAIL in the transcript:\n%s", tr)
	}
	if st := c.Stats(); st.FailedPermanent != 1 || st.Retries != 0 {
		t.Errorf("Stats %+v: want 1 permanent failure, no retry", st)
	}
	// The session is still usable: a message without RequireTLS goes,
	// and by the time it has arrived the first would have too.
	svcFence(t, env, c)
	if n := len(svcFiles(env, msg.MessageID)); n != 0 {
		t.Errorf("%d delivered files contain the refused message", n)
	}
	if env.Log != "" {
		if n := svcCount(svcLogLines(t, env), "<"+from+">"); n != 0 {
			t.Errorf("Postfix's log names the sender of the refused message %d times", n)
		}
	}
}

// TestPostfixServiceMaxMessagesPerSession sends 5 messages with Send and
// WithMaxMessagesPerSession(2): every message arrives, over 3 Postfix
// connections carrying 2, 2 and 1 messages, each ended with QUIT.
func TestPostfixServiceMaxMessagesPerSession(t *testing.T) {
	env := testenv.Postfix(t)
	if env.Log == "" {
		t.Skip("MAILER_TEST_POSTFIX_LOG unset: the connections are counted in Postfix's log")
	}
	c, err := NewConnection(env.Plain, WithSecurity(SecurityNone), WithMaxMessagesPerSession(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	from := "svc-persession-" + svcTag() + "@example.test"
	var ids []string
	for i := range 5 {
		msg := svcMessage(from, fmt.Sprint("per session ", i), "someone@example.test")
		if _, err := c.Send(testCtx(t), msg); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		ids = append(ids, msg.MessageID)
	}
	for _, id := range ids {
		svcWaitFile(t, env, []string{"<" + id + ">"}, nil, 30*time.Second)
	}
	c.Close()
	if st := c.Stats(); st.SessionsOpened != 3 || st.SessionsRetired < 2 || st.Sent != 5 {
		t.Errorf("Stats %+v: want 3 sessions opened, at least 2 retired, 5 sent", st)
	}

	// Postfix's log ties each message to its connection: cleanup logs
	// "QID: message-id=<id>", the smtpd process "QID: client=...", and
	// that process logged "connect from" when the connection began and
	// "disconnect from ..." with its command counts when it ended. Other
	// tests may use Postfix at the same time: only this test's messages
	// are followed.
	smtpd := regexp.MustCompile(`postfix/smtpd\[(\d+)\]: (.*)$`)
	qidOf := regexp.MustCompile(`: ([0-9A-F]+): message-id=<([^>]+)>`)
	type conn struct {
		connect    int    // line number of "connect from"
		disconnect string // the "disconnect from" line, once logged
		messages   int
	}
	var conns map[int]*conn // by line number of "connect from"
	find := func(lines []string) bool {
		conns = map[int]*conn{}
		qids := map[string]bool{}
		for _, l := range lines {
			if m := qidOf.FindStringSubmatch(l); m != nil && slices.Contains(ids, m[2]) {
				qids[m[1]] = true
			}
		}
		if len(qids) != len(ids) {
			return false
		}
		for i, l := range lines {
			m := smtpd.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			qid, rest, _ := strings.Cut(m[2], ": ")
			if !qids[qid] || !strings.HasPrefix(rest, "client=") {
				continue
			}
			// The connection of this smtpd process that carried it.
			start := -1
			for j := i - 1; j >= 0; j-- {
				if p := smtpd.FindStringSubmatch(lines[j]); p != nil && p[1] == m[1] && strings.HasPrefix(p[2], "connect from") {
					start = j
					break
				}
			}
			if start < 0 {
				return false
			}
			cn := conns[start]
			if cn == nil {
				cn = &conn{connect: start}
				conns[start] = cn
				for j := start + 1; j < len(lines); j++ {
					if p := smtpd.FindStringSubmatch(lines[j]); p != nil && p[1] == m[1] && strings.HasPrefix(p[2], "disconnect from") {
						cn.disconnect = p[2]
						break
					}
				}
			}
			cn.messages++
		}
		for _, cn := range conns {
			if cn.disconnect == "" {
				return false
			}
		}
		return true
	}
	svcWaitLog(t, env, "the connections of the 5 messages, each with its disconnect line", find, 30*time.Second)
	var perConn []int
	for _, cn := range conns {
		perConn = append(perConn, cn.messages)
		if !strings.Contains(cn.disconnect, " quit=1 ") || !strings.Contains(cn.disconnect, fmt.Sprintf(" mail=%d ", cn.messages)) {
			t.Errorf("connection with %d messages ended with %q: want mail=%d and quit=1", cn.messages, cn.disconnect, cn.messages)
		}
	}
	slices.Sort(perConn)
	if !slices.Equal(perConn, []int{1, 2, 2}) {
		t.Errorf("messages per Postfix connection %v, want [1 2 2] (3 connections)", perConn)
	}
}

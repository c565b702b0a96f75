package mailer

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

const pipeMsg = "Subject: pipelined\r\n\r\nhello\r\n.dot\r\n"

// verbs returns the first word of each command, for comparing groups.
func verbs(groups [][]string) [][]string {
	out := make([][]string, len(groups))
	for i, g := range groups {
		for _, c := range g {
			out[i] = append(out[i], strings.Fields(c)[0])
		}
	}
	return out
}

// TestPipelinedGroups checks how the commands of one transaction reach the
// server: in one write with PIPELINING (and BDAT with CHUNKING), one at a
// time without, and with the RCPT replies awaited before the message when
// several recipients are sent all-or-nothing.
func TestPipelinedGroups(t *testing.T) {
	cases := []struct {
		name string
		srv  []mailertest.Option
		to   []string
		opts []Option
		want [][]string // the groups after EHLO
	}{
		{"chunking", nil, []string{"a@example.test"}, nil, [][]string{{"MAIL", "RCPT", "BDAT"}}},
		{"pipelining", []mailertest.Option{mailertest.WithoutChunking()}, []string{"a@example.test"}, nil,
			[][]string{{"MAIL", "RCPT", "DATA"}}},
		{"neither", []mailertest.Option{mailertest.WithoutChunking(), mailertest.WithoutPipelining()}, []string{"a@example.test"}, nil,
			[][]string{{"MAIL"}, {"RCPT"}, {"DATA"}}},
		{"chunking, two recipients", nil, []string{"a@example.test", "b@example.test"}, nil,
			[][]string{{"MAIL", "RCPT", "RCPT"}, {"BDAT"}}},
		{"pipelining, two recipients", []mailertest.Option{mailertest.WithoutChunking()}, []string{"a@example.test", "b@example.test"}, nil,
			[][]string{{"MAIL", "RCPT", "RCPT"}, {"DATA"}}},
		{"chunking, two recipients, partial", nil, []string{"a@example.test", "b@example.test"}, []Option{WithPartialDelivery()},
			[][]string{{"MAIL", "RCPT", "RCPT", "BDAT"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(t, tc.srv...)
			c := plain(t, srv.Addr(), tc.opts...)
			env := Envelope{From: "from@example.test", To: tc.to}
			if _, err := c.SendRaw(testCtx(t), env, strings.NewReader(pipeMsg)); err != nil {
				t.Fatal(err)
			}
			got := verbs(srv.CommandGroups())
			if len(got) == 0 || got[0][0] != "EHLO" {
				t.Fatalf("groups %q", got)
			}
			if !slices.EqualFunc(got[1:], tc.want, slices.Equal) {
				t.Errorf("groups %q, want EHLO then %q", got, tc.want)
			}
			msgs := srv.Messages()
			if len(msgs) != 1 || string(msgs[0].Data) != pipeMsg || !slices.Equal(msgs[0].To, tc.to) {
				t.Errorf("received %+v", msgs)
			}
		})
	}
}

// TestPipelinedStreamOnOneSession sends several messages one after another
// on one pipelining session: each arrives whole, in order.
func TestPipelinedStreamOnOneSession(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		var opts []mailertest.Option
		if !chunking {
			opts = append(opts, mailertest.WithoutChunking())
		}
		srv := newTestServer(t, opts...)
		c := plain(t, srv.Addr())
		for i := range 5 {
			body := pipeMsg + strings.Repeat("line "+strconv.Itoa(i)+"\r\n", i*1000)
			if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		}
		msgs := srv.Messages()
		if len(msgs) != 5 || srv.Connections() != 1 {
			t.Fatalf("chunking=%v: %d messages over %d connections", chunking, len(msgs), srv.Connections())
		}
		for i, m := range msgs {
			if want := pipeMsg + strings.Repeat("line "+strconv.Itoa(i)+"\r\n", i*1000); string(m.Data) != want {
				t.Errorf("chunking=%v: message %d differs (%d bytes, want %d)", chunking, i, len(m.Data), len(want))
			}
		}
	}
}

// TestPipelinedRefusals: every refusal rule of the one-by-one path holds
// when the transaction is pipelined, with and without CHUNKING.
func TestPipelinedRefusals(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		opts := []mailertest.Option{
			mailertest.WithRecipientReply("bad@example.test", 550, "5.1.1", "no such user"),
			mailertest.WithRecipientReply("later@example.test", 451, "4.3.0", "try later"),
		}
		if !chunking {
			opts = append(opts, mailertest.WithoutChunking())
		}
		srv := newTestServer(t, opts...)
		strict := plain(t, srv.Addr())
		partial := plain(t, srv.Addr(), WithPartialDelivery())
		send := func(c *Connection, to ...string) (*SendResult, error) {
			return c.SendRaw(testCtx(t), Envelope{From: "from@example.test", To: to}, strings.NewReader(pipeMsg))
		}
		var re *RecipientsError

		// One recipient, refused: the message was pipelined with it, yet
		// nothing is delivered.
		if _, err := send(strict, "bad@example.test"); !errors.As(err, &re) || len(re.Rejected) != 1 {
			t.Errorf("chunking=%v: one refused: err = %v", chunking, err)
		}
		// All-or-nothing: one refusal stops the message for everyone.
		if _, err := send(strict, "ok@example.test", "later@example.test"); !errors.As(err, &re) ||
			re.Rejected[0].Address != "later@example.test" {
			t.Errorf("chunking=%v: all-or-nothing: err = %v", chunking, err)
		} else if se := (*SMTPError)(nil); !errors.As(err, &se) || !se.Temporary() {
			t.Errorf("chunking=%v: the 451 is not temporary: %v", chunking, err)
		}
		// Partial: delivered to the accepted one.
		res, err := send(partial, "ok@example.test", "bad@example.test", "ok2@example.test")
		if err != nil || !slices.Equal(res.Accepted, []string{"ok@example.test", "ok2@example.test"}) ||
			len(res.Rejected) != 1 || res.Rejected[0].Address != "bad@example.test" {
			t.Errorf("chunking=%v: partial: %+v, %v", chunking, res, err)
		}
		// Partial with every recipient refused.
		if _, err := send(partial, "bad@example.test", "later@example.test"); !errors.As(err, &re) || len(re.Rejected) != 2 {
			t.Errorf("chunking=%v: all refused: err = %v", chunking, err)
		}
		// The sessions are still in step: a good message goes through.
		if _, err := send(strict, "ok@example.test"); err != nil {
			t.Errorf("chunking=%v: after the refusals: %v", chunking, err)
		}
		msgs := srv.Messages()
		if len(msgs) != 2 || !slices.Equal(msgs[0].To, []string{"ok@example.test", "ok2@example.test"}) ||
			!slices.Equal(msgs[1].To, []string{"ok@example.test"}) {
			t.Errorf("chunking=%v: delivered %+v", chunking, msgs)
		}
		if srv.Connections() != 2 {
			t.Errorf("chunking=%v: %d connections, want one per Connection", chunking, srv.Connections())
		}
	}
}

// TestPipelinedDataAcceptedWithoutRecipients: RFC 2920 3.1. A server may
// answer DATA with 354 although it refused every recipient: the client
// sends a lone dot, not the message, and resets.
func TestPipelinedDataAcceptedWithoutRecipients(t *testing.T) {
	var afterDATA []string
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve([]string{"PIPELINING"}, smtpHooks{
			"RCPT": func(c *scriptConn, _ string) bool { c.send("550 5.1.1 no"); return true },
			"DATA": func(c *scriptConn, _ string) bool {
				c.send("354 go ahead, anyway")
				l, ok := c.line()
				afterDATA = append(afterDATA, l)
				c.send("554 5.5.1 no valid recipients")
				return ok
			},
		})
	})
	c := plain(t, srv.addr())
	_, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(pipeMsg))
	var re *RecipientsError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want *RecipientsError", err)
	}
	if !slices.Equal(afterDATA, []string{"."}) {
		t.Errorf("after DATA the client sent %q, want a lone dot", afterDATA)
	}
	if !srv.saw("RSET") {
		t.Error("no RSET after the refused transaction")
	}
}

// TestPipelinedSmugglingNormalised: bare CR and LF become CRLF on both
// pipelined paths, so nothing inside a message can end it early.
func TestPipelinedSmugglingNormalised(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		var opts []mailertest.Option
		if !chunking {
			opts = append(opts, mailertest.WithoutChunking())
		}
		srv := newTestServer(t, opts...)
		c := plain(t, srv.Addr())
		body := "Subject: x\r\n\r\nhello\r.\r\nMAIL FROM:<evil@example.test>\r\nbare\nlf\r"
		if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		msgs := srv.Messages()
		want := "Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@example.test>\r\nbare\r\nlf\r\n"
		if len(msgs) != 1 || string(msgs[0].Data) != want {
			t.Errorf("chunking=%v: received %+v, want %q", chunking, msgs, want)
		}
		for _, cmd := range srv.Commands() {
			if strings.Contains(cmd, "evil") {
				t.Errorf("chunking=%v: smuggled command %q", chunking, cmd)
			}
		}
	}
}

// TestPipelinedReaderFailure: a message reader that fails, before or after
// a chunk went out, drops the connection and nothing is delivered.
func TestPipelinedReaderFailure(t *testing.T) {
	for _, size := range []int{10, 3 * maxChunk} {
		for _, chunking := range []bool{true, false} {
			var opts []mailertest.Option
			if !chunking {
				opts = append(opts, mailertest.WithoutChunking())
			}
			srv := newTestServer(t, opts...)
			c := plain(t, srv.Addr())
			r := io.MultiReader(strings.NewReader(pipeMsg+strings.Repeat(strings.Repeat("x", 76)+"\r\n", size/78)), iotest.ErrReader(errors.New("disk gone")))
			_, err := c.SendRaw(testCtx(t), testEnvelope, r)
			if err == nil || !strings.Contains(err.Error(), "disk gone") || errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("size %d chunking=%v: err = %v", size, chunking, err)
			}
			if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(pipeMsg)); err != nil {
				t.Errorf("size %d chunking=%v: next send: %v", size, chunking, err)
			}
			if n := len(srv.Messages()); n != 1 {
				t.Errorf("size %d chunking=%v: %d messages delivered, want only the good one", size, chunking, n)
			}
		}
	}
}

// TestPipelinedIdleSessionClosedByServer: a pooled session whose server
// said 421 and closed it while idle is noticed before a pipelined
// transaction, and the message goes through a new session.
func TestPipelinedIdleSessionClosedByServer(t *testing.T) {
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve([]string{"PIPELINING", "CHUNKING"}, smtpHooks{
			"BDAT": func(c *scriptConn, l string) bool {
				n, _ := strconv.Atoi(strings.Fields(l)[1])
				io.CopyN(io.Discard, c.r, int64(n))
				c.send("250 2.0.0 queued")
				if c.n == 1 {
					c.send("421 4.4.2 idle too long") // unasked, then gone
					return false
				}
				return true
			},
		})
	})
	c := plain(t, srv.addr())
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(pipeMsg)); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.idle[0].lastUsed = time.Now().Add(-time.Minute)
	c.mu.Unlock()
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(pipeMsg)); err != nil {
		t.Fatalf("second send: %v", err)
	}
	if srv.connections() != 2 {
		t.Errorf("%d connections, want a new one for the second message", srv.connections())
	}
}

// bdatSink is a minimal CHUNKING server that discards what it is sent,
// allocating next to nothing, for measuring the client alone.
func bdatSink(t *testing.T) string {
	return newScriptServer(t, func(c *scriptConn) {
		c.serve([]string{"PIPELINING", "CHUNKING"}, smtpHooks{
			"BDAT": func(c *scriptConn, l string) bool {
				f := strings.Fields(l)
				n, _ := strconv.ParseInt(f[1], 10, 64)
				if _, err := io.CopyN(io.Discard, c.r, n); err != nil {
					return false
				}
				c.send("250 2.0.0 ok")
				return true
			},
		})
	}).addr()
}

// endless yields n bytes of message lines without holding them.
type endless struct{ left int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), e.left))
	const line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef012345\r\n"
	for i := range n {
		p[i] = line[i%len(line)]
	}
	e.left -= int64(n)
	return n, nil
}

// TestBDATStreamsLargeMessages: a 50 MiB message goes through BDAT with a
// few MiB of allocation at most: it is never held whole.
func TestBDATStreamsLargeMessages(t *testing.T) {
	c := plain(t, bdatSink(t))
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	var err error
	n := allocated(func() {
		_, err = c.SendRaw(testCtx(t), testEnvelope, io.MultiReader(strings.NewReader("Subject: big\r\n\r\n"), &endless{50 << 20}))
	})
	if err != nil {
		t.Fatal(err)
	}
	if n > 4<<20 {
		t.Errorf("sending 50 MiB allocated %d bytes", n)
	}
}

// TestTranscriptSummarisesChunks: BDAT chunks appear as byte counts in
// the transcript, never as lines.
func TestTranscriptSummarisesChunks(t *testing.T) {
	var debug bytes.Buffer
	srv := newTestServer(t)
	c := plain(t, srv.Addr(), WithDebugWriter(&debug, false))
	body := pipeMsg + "SECRET-BODY-LINE\r\n"
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	out := debug.String()
	if strings.Contains(out, "SECRET-BODY-LINE") || !strings.Contains(out, "C: BDAT "+strconv.Itoa(len(body))+" LAST\n") ||
		!strings.Contains(out, "C: ["+strconv.Itoa(len(body))+" bytes of message data]\n") {
		t.Errorf("transcript:\n%s", out)
	}
	// Replies come after the commands they answer were all written.
	sc := bufio.NewScanner(strings.NewReader(out))
	var order []string
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "C: MAIL") || strings.HasPrefix(l, "C: BDAT") || strings.HasPrefix(l, "S: 250 2.0.0 Roger") {
			order = append(order, l[:7])
		}
	}
	if len(order) < 2 || order[0] != "C: MAIL" || order[1] != "C: BDAT" {
		t.Errorf("order %q: want MAIL and BDAT written before the first reply", order)
	}
}

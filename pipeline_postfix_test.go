package mailer

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/internal/testenv"
)

// firstReplyAfter returns the client lines of the transcript written
// before the first server line that follows the client line starting with
// prefix: what went out in one round trip.
func firstReplyAfter(transcript, prefix string) []string {
	var sent []string
	started := false
	for _, l := range strings.Split(transcript, "\n") {
		switch {
		case !started && strings.HasPrefix(l, "C: "+prefix):
			started = true
			sent = append(sent, strings.Fields(l[3:])[0])
		case started && strings.HasPrefix(l, "C: ") && !strings.HasPrefix(l, "C: ["):
			sent = append(sent, strings.Fields(l[3:] + " x")[0])
		case started && strings.HasPrefix(l, "S: "):
			return sent
		}
	}
	return sent
}

// TestPostfixPipelined delivers through the real Postfix with CHUNKING
// (BDAT) and with PIPELINING alone (DATA): one recipient fully pipelined,
// several all-or-nothing, partial delivery, refusals, a message of several
// chunks and several messages on one session, each read back from the
// Maildir byte for byte; Postfix must log no improper pipelining.
func TestPostfixPipelined(t *testing.T) {
	env := testenv.Postfix(t)
	for _, tc := range []struct {
		name, addr, end string
	}{{"chunking", env.Plain, "BDAT"}, {"pipelining", env.NoChunk, "DATA"}} {
		t.Run(tc.name, func(t *testing.T) {
			var transcript bytes.Buffer
			c, err := NewConnection(tc.addr, WithSecurity(SecurityNone), WithDebugWriter(&transcript, false))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			partial, err := NewConnection(tc.addr, WithSecurity(SecurityNone), WithPartialDelivery())
			if err != nil {
				t.Fatal(err)
			}
			defer partial.Close()
			send := func(c *Connection, subject string, body string, to ...string) (string, string, *SendResult, error) {
				msg, id := rawMessage(tc.name + " " + subject)
				msg += body
				res, err := c.SendRaw(testCtx(t), Envelope{From: "sender@example.test", To: to}, strings.NewReader(msg))
				return msg, id, res, err
			}

			// One recipient: MAIL, RCPT and the message's command in one
			// round trip.
			transcript.Reset()
			msg, id, _, err := send(c, "single", "", "someone@example.test")
			if err != nil {
				t.Fatalf("single: %v\n%s", err, transcript.String())
			}
			delivered(t, env, msg, id)
			if got := firstReplyAfter(transcript.String(), "MAIL"); !slices.Equal(got, []string{"MAIL", "RCPT", tc.end}) {
				t.Errorf("one round trip carried %q, want MAIL RCPT %s", got, tc.end)
			}

			// Several recipients, all-or-nothing: the message goes after
			// the RCPT replies.
			transcript.Reset()
			msg, id, _, err = send(c, "two", "", "someone@example.test", "other@example.test")
			if err != nil {
				t.Fatal(err)
			}
			delivered(t, env, msg, id)
			if got := firstReplyAfter(transcript.String(), "MAIL"); !slices.Equal(got, []string{"MAIL", "RCPT", "RCPT"}) {
				t.Errorf("first round trip carried %q, want MAIL RCPT RCPT", got)
			}

			// All-or-nothing with a refusal: nothing delivered.
			_, refusedID, _, err := send(c, "refused", "", "someone@example.test", "reject@example.test")
			var re *RecipientsError
			if !errors.As(err, &re) || len(re.Rejected) != 1 || re.Rejected[0].Address != "reject@example.test" {
				t.Errorf("all-or-nothing: err = %v", err)
			}
			// One recipient, refused, fully pipelined: Postfix refuses
			// the message too (554 for DATA, or for BDAT).
			transcript.Reset()
			_, refusedID2, _, err := send(c, "refused single", "", "reject@example.test")
			if !errors.As(err, &re) || len(re.Rejected) != 1 {
				t.Errorf("single refused: err = %v\n%s", err, transcript.String())
			}
			// A temporary refusal is reported as such.
			_, _, _, err = send(c, "tempfail", "", "tempfail@example.test")
			if se := (*SMTPError)(nil); !errors.As(err, &se) || se.Code != 451 || !se.Temporary() {
				t.Errorf("tempfail: err = %v", err)
			}

			// Partial delivery.
			msg, id, res, err := send(partial, "partial", "", "someone@example.test", "reject@example.test")
			if err != nil || !slices.Equal(res.Accepted, []string{"someone@example.test"}) || len(res.Rejected) != 1 {
				t.Errorf("partial: %+v, %v", res, err)
			} else {
				delivered(t, env, msg, id)
			}

			// A message of several chunks, and three in a row on the
			// same session.
			big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123\r\n", 3*maxChunk/70)
			msg, id, _, err = send(c, "big", big, "someone@example.test")
			if err != nil {
				t.Fatal(err)
			}
			delivered(t, env, msg, id)
			for i := range 3 {
				msg, id, _, err := send(c, "row "+string(rune('a'+i)), "", "someone@example.test")
				if err != nil {
					t.Fatal(err)
				}
				delivered(t, env, msg, id)
			}
			for _, refused := range []string{refusedID, refusedID2} {
				if env.Has(refused) {
					t.Errorf("a refused message (%s) was delivered", refused)
				}
			}
		})
	}
	// Postfix's smtpd notes a client that pipelines where it may not.
	if env.Log != "" {
		deadline := time.Now().Add(5 * time.Second)
		for {
			log, err := os.ReadFile(env.Log)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(log, []byte("improper command pipelining")) {
				t.Errorf("Postfix logged improper command pipelining:\n%s", log)
				break
			}
			// The log is written asynchronously: wait for the last
			// session's disconnect line.
			if bytes.Contains(log, []byte("disconnect from")) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestSMTPSinkPaths sends through Postfix's smtp-sink with PIPELINING (no
// CHUNKING: the DATA path pipelined) and without (go-smtp's path).
func TestSMTPSinkPaths(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		addr := testenv.SMTPSink(t, pipelining)
		var transcript bytes.Buffer
		c, err := NewConnection(addr, WithSecurity(SecurityNone), WithDebugWriter(&transcript, false))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			msg, _ := rawMessage("sink")
			if _, err := c.SendRaw(testCtx(t), Envelope{From: "a@example.test", To: []string{"b@example.test", "c@example.test"}},
				strings.NewReader(msg+strings.Repeat("x\r\n", i*1000))); err != nil {
				t.Fatalf("pipelining=%v: %v\n%s", pipelining, err, transcript.String())
			}
		}
		c.Close()
		want := []string{"MAIL", "RCPT", "RCPT"}
		if !pipelining {
			want = []string{"MAIL"}
		}
		if got := firstReplyAfter(transcript.String(), "MAIL"); !slices.Equal(got, want) {
			t.Errorf("pipelining=%v: first round trip carried %q, want %q", pipelining, got, want)
		}
	}
}

// TestPostfixSendAll streams messages through the real Postfix with and
// without CHUNKING, over two sessions, one refused in the middle: each
// delivered message is read back byte for byte.
func TestPostfixSendAll(t *testing.T) {
	env := testenv.Postfix(t)
	for _, addr := range []string{env.Plain, env.NoChunk} {
		c, err := NewConnection(addr, WithSecurity(SecurityNone), WithMaxConnections(2))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []*Message
		for i := range 20 {
			msg, id := rawMessage("stream")
			to := "someone@example.test"
			if i == 7 {
				to = "reject@example.test"
			}
			msgs = append(msgs, &Message{From: Recipient{Address: "sender@example.test"}, To: []Recipient{{Address: to}},
				Subject: "stream " + id, Text: msg, MessageID: id, Date: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)})
		}
		i := 0
		for res, err := range c.SendAll(testCtx(t), slices.Values(msgs)) {
			var re *RecipientsError
			switch {
			case i == 7:
				if !errors.As(err, &re) {
					t.Errorf("%s: message 7: err = %v, want the refusal", addr, err)
				}
			case err != nil:
				t.Errorf("%s: message %d: %v", addr, i, err)
			default:
				var b bytes.Buffer
				msgs[i].WriteTo(&b)
				delivered(t, env, b.String(), res.MessageID)
			}
			i++
		}
		c.Close()
		if i != 20 {
			t.Errorf("%s: %d outcomes", addr, i)
		}
	}
}

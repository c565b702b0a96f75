package mailer

import (
	"errors"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

// streamMsgs returns n messages; those whose index is in bad go to a
// refused recipient, those in invalid have an invalid address.
func streamMsgs(n int, bad, invalid []int) []*Message {
	var out []*Message
	for i := range n {
		to := fmt.Sprintf("to%d@example.test", i)
		if slices.Contains(bad, i) {
			to = "bad@example.test"
		}
		if slices.Contains(invalid, i) {
			to = "not an address"
		}
		out = append(out, &Message{
			From:      Recipient{Address: "from@example.test"},
			To:        []Recipient{{Address: to}},
			Subject:   fmt.Sprintf("message %d", i),
			Text:      fmt.Sprintf("body of message %d\n", i),
			MessageID: fmt.Sprintf("m%d@example.test", i),
		})
	}
	return out
}

type outcome struct {
	res *SendResult
	err error
}

func collect(seq iter.Seq2[*SendResult, error]) []outcome {
	var out []outcome
	for res, err := range seq {
		out = append(out, outcome{res, err})
	}
	return out
}

// TestSendAll streams messages on every path (CHUNKING, PIPELINING alone,
// neither) and over several sessions: every message gets exactly one
// outcome, in order, refusals and invalid messages fail alone, and the
// server receives exactly the others.
func TestSendAll(t *testing.T) {
	cases := []struct {
		name  string
		srv   []mailertest.Option
		conns int
	}{
		{"chunking", nil, 1},
		{"pipelining", []mailertest.Option{mailertest.WithoutChunking()}, 1},
		{"neither", []mailertest.Option{mailertest.WithoutChunking(), mailertest.WithoutPipelining()}, 1},
		{"chunking, 4 sessions", nil, 4},
		{"pipelining, 4 sessions", []mailertest.Option{mailertest.WithoutChunking()}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(t, append(tc.srv, mailertest.WithRecipientReply("bad@example.test", 550, "5.1.1", "no such user"))...)
			c := plain(t, srv.Addr(), WithMaxConnections(tc.conns))
			bad, invalid := []int{3, 17, 18, 40}, []int{5, 41}
			msgs := streamMsgs(60, bad, invalid)
			got := collect(c.SendAll(testCtx(t), slices.Values(msgs)))
			if len(got) != len(msgs) {
				t.Fatalf("%d outcomes for %d messages", len(got), len(msgs))
			}
			var want []string
			for i, o := range got {
				var re *RecipientsError
				switch {
				case slices.Contains(bad, i):
					if !errors.As(o.err, &re) {
						t.Errorf("message %d: err = %v, want *RecipientsError", i, o.err)
					}
				case slices.Contains(invalid, i):
					if !errors.Is(o.err, ErrInvalidAddress) {
						t.Errorf("message %d: err = %v, want ErrInvalidAddress", i, o.err)
					}
				case o.err != nil:
					t.Errorf("message %d: %v", i, o.err)
				case o.res.MessageID != fmt.Sprintf("m%d@example.test", i):
					t.Errorf("message %d: result for %s", i, o.res.MessageID)
				default:
					want = append(want, fmt.Sprintf("message %d", i))
				}
			}
			var received []string
			for _, m := range srv.Messages() {
				for _, l := range strings.Split(string(m.Data), "\r\n") {
					if s, ok := strings.CutPrefix(l, "Subject: "); ok {
						received = append(received, s)
					}
				}
			}
			if tc.conns == 1 && !slices.Equal(received, want) {
				t.Errorf("received %q, want %q", received, want)
			}
			slices.Sort(received)
			slices.Sort(want)
			if !slices.Equal(received, want) {
				t.Errorf("received %d messages, want %d", len(received), len(want))
			}
			if tc.conns > 1 && srv.Connections() < 2 {
				t.Errorf("%d connections for %d allowed", srv.Connections(), tc.conns)
			}
			// With CHUNKING, transactions follow each other without
			// waiting: some socket read brings two MAILs.
			if strings.HasPrefix(tc.name, "chunking") {
				most := 0
				for _, g := range verbs(srv.CommandGroups()) {
					most = max(most, strings.Count(strings.Join(g, " "), "MAIL"))
				}
				if most < 2 {
					t.Errorf("no two transactions arrived together: %q", verbs(srv.CommandGroups()))
				}
			}
		})
	}
}

// TestSendAllAllOrNothing: a message with several recipients, one of them
// refused, is not delivered to the others, in the middle of a stream.
func TestSendAllAllOrNothing(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		opts := []mailertest.Option{mailertest.WithRecipientReply("bad@example.test", 550, "5.1.1", "no such user")}
		if !chunking {
			opts = append(opts, mailertest.WithoutChunking())
		}
		srv := newTestServer(t, opts...)
		c := plain(t, srv.Addr())
		msgs := streamMsgs(6, nil, nil)
		msgs[2].To = append(msgs[2].To, Recipient{Address: "bad@example.test"})
		msgs[4].To = append(msgs[4].To, Recipient{Address: "other@example.test"})
		got := collect(c.SendAll(testCtx(t), slices.Values(msgs)))
		for i, o := range got {
			var re *RecipientsError
			if (i == 2) != errors.As(o.err, &re) || i != 2 && o.err != nil {
				t.Errorf("chunking=%v: message %d: %v", chunking, i, o.err)
			}
		}
		if n := len(srv.Messages()); n != 5 {
			t.Errorf("chunking=%v: %d messages delivered, want 5", chunking, n)
		}
		for _, m := range srv.Messages() {
			if strings.Contains(string(m.Data), "message 2") {
				t.Errorf("chunking=%v: the refused message was delivered to %q", chunking, m.To)
			}
		}
	}
}

// TestSendAllStopsEarly: breaking out of the loop finishes what is in
// flight, takes no more messages and leaves no goroutine behind.
func TestSendAllStopsEarly(t *testing.T) {
	srv := newTestServer(t)
	before := runtime.NumGoroutine()
	c := plain(t, srv.Addr(), WithMaxConnections(2))
	taken := 0
	msgs := func(yield func(*Message) bool) {
		for _, m := range streamMsgs(1000, nil, nil) {
			taken++
			if !yield(m) {
				return
			}
		}
	}
	n := 0
	for _, err := range c.SendAll(testCtx(t), msgs) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 5 {
			break
		}
	}
	if taken > 100 {
		t.Errorf("%d messages taken after stopping at 5", taken)
	}
	if got := len(srv.Messages()); got < 5 || got > taken {
		t.Errorf("%d delivered, %d taken", got, taken)
	}
	// Once closed, nothing of the Connection runs (nor of the server's
	// side of its connections).
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("%d goroutines after SendAll, %d before", g, before)
	}
}

// TestSendAllFaults: a connection dropped after a message's end fails that
// message with ErrOutcomeUnknown, and every message still gets exactly one
// outcome; the rest go on over a new session.
func TestSendAllFaults(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		opts := []mailertest.Option{mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Drop, Conn: 1, Nth: 3})}
		if !chunking {
			opts = append(opts, mailertest.WithoutChunking())
		}
		srv := newTestServer(t, opts...)
		c := plain(t, srv.Addr())
		got := collect(c.SendAll(testCtx(t), slices.Values(streamMsgs(30, nil, nil))))
		if len(got) != 30 {
			t.Fatalf("chunking=%v: %d outcomes", chunking, len(got))
		}
		delivered := map[string]int{}
		for _, m := range srv.Messages() {
			delivered[strings.SplitN(strings.SplitN(string(m.Data), "Subject: ", 2)[1], "\r\n", 2)[0]]++
		}
		tally := map[string]int{}
		for i, o := range got {
			n := delivered[fmt.Sprintf("message %d", i)]
			switch {
			case n > 1:
				t.Errorf("chunking=%v: message %d delivered %d times", chunking, i, n)
			case errors.Is(o.err, ErrOutcomeUnknown):
				tally["unknown"]++
			case o.err != nil && n > 0:
				t.Errorf("chunking=%v: message %d failed (%v) but was delivered", chunking, i, o.err)
			case o.err != nil:
				tally["failed"]++
			case n == 0:
				t.Errorf("chunking=%v: message %d succeeded but was not delivered", chunking, i)
			default:
				tally["delivered"]++
			}
		}
		// At most the transactions in flight end without delivery: the
		// one at the fault, depth queued for the reader, one blocked
		// handing itself to the reader, and under the race detector's
		// scheduling one more seen once in about a hundred runs.
		if !errors.Is(got[2].err, ErrOutcomeUnknown) || tally["delivered"] < 30-3-c.cfg.pipelineDepth {
			t.Errorf("chunking=%v: third message: %v; %v", chunking, got[2].err, tally)
		}
	}
}

func TestPipelineDepthOption(t *testing.T) {
	if _, err := NewConnection("x.example.test", WithPipelineDepth(0)); err == nil {
		t.Error("depth 0 accepted")
	}
	c, err := NewConnection("x.example.test", WithPipelineDepth(3))
	if err != nil || c.cfg.pipelineDepth != 3 {
		t.Errorf("depth 3: %v", err)
	}
}

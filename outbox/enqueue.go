package outbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/textproto"
	"strings"
	"time"

	"github.com/gomailer/mailer"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// sendArgs is the River job of one message: only its row, never its body.
type sendArgs struct {
	ID        int64  `json:"id"`
	MessageID string `json:"message_id" river:"unique"`
}

func (sendArgs) Kind() string { return "mailer_outbox_send" }

// Enqueue renders msg, fixing its Message-ID (a random one at From's
// domain if empty) and Date, and stores it for delivery in a transaction of
// its own. It returns the stored message; a message that does not validate
// is an error, and a Message-ID already in the outbox is ErrDuplicate with
// the message that is there.
func (o *Outbox[TTx]) Enqueue(ctx context.Context, msg *mailer.Message) (*Item, error) {
	return o.ownTx(ctx, func(tx TTx) (*Item, error) { return o.EnqueueTx(ctx, tx, msg) })
}

// ownTx runs an enqueue in a transaction of its own. An ErrDuplicate
// commits nothing new but is no failure of the transaction: it is
// returned with the item already there.
func (o *Outbox[TTx]) ownTx(ctx context.Context, enqueue func(tx TTx) (*Item, error)) (*Item, error) {
	var it *Item
	var dup error
	err := o.inTx(ctx, func(_ querier, tx TTx) error {
		var err error
		it, err = enqueue(tx)
		if errors.Is(err, ErrDuplicate) {
			dup = err
			return nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return it, dup
}

// EnqueueTx is Enqueue inside the caller's transaction: the message is
// delivered only if tx commits. Errors are Enqueue's; an ErrDuplicate
// leaves tx usable.
func (o *Outbox[TTx]) EnqueueTx(ctx context.Context, tx TTx, msg *mailer.Message) (*Item, error) {
	env, raw, id, err := render(msg)
	if err != nil {
		return nil, err
	}
	return o.insert(ctx, tx, id, env, raw)
}

// EnqueueRaw stores the complete RFC 5322 message raw for delivery to env,
// in a transaction of its own. messageID ("" means the Message-ID field of
// raw) is the key that makes a second enqueue of the same message
// ErrDuplicate. A raw message without either is an error.
func (o *Outbox[TTx]) EnqueueRaw(ctx context.Context, messageID string, env mailer.Envelope, raw []byte) (*Item, error) {
	return o.ownTx(ctx, func(tx TTx) (*Item, error) { return o.EnqueueRawTx(ctx, tx, messageID, env, raw) })
}

// EnqueueRawTx is EnqueueRaw inside the caller's transaction.
func (o *Outbox[TTx]) EnqueueRawTx(ctx context.Context, tx TTx, messageID string, env mailer.Envelope, raw []byte) (*Item, error) {
	if messageID == "" {
		messageID = headerMessageID(raw)
	}
	if messageID == "" {
		return nil, errors.New("outbox: EnqueueRaw: no Message-ID given or found in the message")
	}
	if len(env.To) == 0 {
		return nil, errors.New("outbox: EnqueueRaw: no recipient in the envelope")
	}
	return o.insert(ctx, tx, messageID, env, bytes.Clone(raw))
}

// headerMessageID returns the Message-ID field of raw's header without
// angle brackets, or "".
func headerMessageID(raw []byte) string {
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return ""
	}
	return strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>")
}

// render validates msg and renders it with its Message-ID and Date fixed.
// The caller's msg is not changed.
func render(msg *mailer.Message) (mailer.Envelope, []byte, string, error) {
	if msg == nil {
		return mailer.Envelope{}, nil, "", errors.New("outbox: Enqueue(nil)")
	}
	if err := msg.Validate(); err != nil {
		return mailer.Envelope{}, nil, "", err
	}
	m := *msg
	if m.MessageID == "" {
		m.MessageID = newMessageID(m.From.Address)
	}
	if m.Date.IsZero() {
		m.Date = time.Now()
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		return mailer.Envelope{}, nil, "", err
	}
	return envelope(&m), buf.Bytes(), m.MessageID, nil
}

// envelope derives the SMTP envelope as Connection.Send does: msg.Envelope
// if set, else From and every To, Cc and Bcc address once.
func envelope(msg *mailer.Message) mailer.Envelope {
	if msg.Envelope != nil {
		return *msg.Envelope
	}
	env := mailer.Envelope{From: msg.From.Address}
	seen := map[string]bool{}
	for _, list := range [][]mailer.Recipient{msg.To, msg.Cc, msg.Bcc} {
		for _, r := range list {
			key := strings.ToLower(r.Address)
			if !seen[key] {
				seen[key] = true
				env.To = append(env.To, r.Address)
			}
		}
	}
	return env
}

// newMessageID returns a random Message-ID at the domain of from.
func newMessageID(from string) string {
	domain := "localhost"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i < len(from)-1 {
		domain = from[i+1:]
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "@" + domain
}

func (o *Outbox[TTx]) insert(ctx context.Context, tx TTx, messageID string, env mailer.Envelope, raw []byte) (*Item, error) {
	q := o.b.wrap(tx)
	to, err := json.Marshal(env.To)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var id int64
	err = q.queryRow(ctx, `INSERT INTO mailer_outbox (message_id, state, env_from, env_to, body, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING RETURNING id`,
		messageID, string(StateQueued), env.From, string(to), raw, now.UnixMicro(), now.UnixMicro()).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		it, err := getItem(ctx, q, messageID)
		if err != nil {
			return nil, err
		}
		return it, ErrDuplicate
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: storing the message: %w", err)
	}
	res, err := o.client.InsertTx(ctx, tx, sendArgs{ID: id, MessageID: messageID}, &river.InsertOpts{
		Queue: Queue,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
			rivertype.JobStateRunning, rivertype.JobStateScheduled,
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: queueing the job: %w", err)
	}
	if res.UniqueSkippedAsDuplicate {
		// A job for this Message-ID is still in flight though its row is
		// gone: leave that one alone.
		if _, err := q.exec(ctx, `DELETE FROM mailer_outbox WHERE id = ?`, id); err != nil {
			return nil, err
		}
		return nil, ErrDuplicate
	}
	if _, err := q.exec(ctx, `UPDATE mailer_outbox SET job_id = ? WHERE id = ?`, res.Job.ID, id); err != nil {
		return nil, err
	}
	o.log.InfoContext(ctx, "outbox: message queued", slog.String("message_id", messageID),
		slog.Int64("job_id", res.Job.ID), slog.Int("recipients", len(env.To)), slog.Int("bytes", len(raw)))
	return &Item{ID: id, MessageID: messageID, State: StateQueued, Envelope: env, JobID: res.Job.ID,
		CreatedAt: now, UpdatedAt: now}, nil
}

package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river/rivertype"
)

const itemColumns = `id, message_id, state, env_from, env_to, job_id, attempt, last_error, result, created_at, updated_at, sent_at`

func scanItem(r rowScanner) (*Item, error) {
	var it Item
	var state, to, result string
	var created, updated, sent int64
	if err := r.Scan(&it.ID, &it.MessageID, &state, &it.Envelope.From, &to, &it.JobID, &it.Attempt,
		&it.LastError, &result, &created, &updated, &sent); err != nil {
		return nil, err
	}
	it.State = State(state)
	if err := json.Unmarshal([]byte(to), &it.Envelope.To); err != nil {
		return nil, fmt.Errorf("outbox: message %s: envelope: %w", it.MessageID, err)
	}
	if result != "" {
		it.Result = &Result{}
		if err := json.Unmarshal([]byte(result), it.Result); err != nil {
			return nil, fmt.Errorf("outbox: message %s: result: %w", it.MessageID, err)
		}
	}
	it.CreatedAt = time.UnixMicro(created)
	it.UpdatedAt = time.UnixMicro(updated)
	if sent != 0 {
		it.SentAt = time.UnixMicro(sent)
	}
	return &it, nil
}

func getItem(ctx context.Context, q querier, messageID string) (*Item, error) {
	it, err := scanItem(q.queryRow(ctx, `SELECT `+itemColumns+` FROM mailer_outbox WHERE message_id = ?`, messageID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return it, err
}

// Get returns the message with the given Message-ID (without angle
// brackets), or ErrNotFound.
func (o *Outbox[TTx]) Get(ctx context.Context, messageID string) (*Item, error) {
	return getItem(ctx, o.b.pool, messageID)
}

// List returns up to limit messages in state, oldest first, starting after
// the row ID after (0 for the first page; the last Item's ID for the next).
// limit <= 0 means 100.
func (o *Outbox[TTx]) List(ctx context.Context, state State, after int64, limit int) ([]*Item, error) {
	if limit <= 0 {
		limit = 100
	}
	rs, err := o.b.pool.query(ctx, `SELECT `+itemColumns+` FROM mailer_outbox WHERE state = ? AND id > ? ORDER BY id LIMIT ?`,
		string(state), after, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	defer rs.Close()
	var items []*Item
	for rs.Next() {
		it, err := scanItem(rs)
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, rs.Err()
}

// Counts returns how many messages are in each state, every state present
// (zero if none), for a health endpoint.
func (o *Outbox[TTx]) Counts(ctx context.Context) (map[State]int64, error) {
	rs, err := o.b.pool.query(ctx, `SELECT state, COUNT(*) FROM mailer_outbox GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	defer rs.Close()
	counts := make(map[State]int64, len(States))
	for _, s := range States {
		counts[s] = 0
	}
	for rs.Next() {
		var s string
		var n int64
		if err := rs.Scan(&s, &n); err != nil {
			return nil, err
		}
		counts[State(s)] = n
	}
	return counts, rs.Err()
}

// Resend queues an unknown message for delivery again, accepting that it
// may then arrive twice. It returns ErrNotFound, ErrState if the message
// is not unknown, or ctx's error if its River job has not ended by then
// (River records a job's end a moment after the worker returns).
func (o *Outbox[TTx]) Resend(ctx context.Context, messageID string) error {
	it, err := o.Get(ctx, messageID)
	if err != nil {
		return err
	}
	if err := o.jobEnded(ctx, it.JobID); err != nil {
		return err
	}
	err = o.inTx(ctx, func(q querier, tx TTx) error {
		it, err := o.settleUnknown(ctx, q, messageID, StateQueued)
		if err != nil {
			return err
		}
		if _, err := o.client.JobRetryTx(ctx, tx, it.JobID); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		return nil
	})
	if err == nil {
		o.event(ctx, "outbox: unknown message queued again by the operator", messageID)
	}
	return err
}

// jobEnded polls until the River job jobID is no longer running, for at
// most ten seconds or until ctx ends.
func (o *Outbox[TTx]) jobEnded(ctx context.Context, jobID int64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		job, err := o.client.JobGet(ctx, jobID)
		if err != nil {
			return fmt.Errorf("outbox: River job %d: %w", jobID, err)
		}
		if job.State != rivertype.JobStateRunning {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("outbox: River job %d still running: %w", jobID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Drop gives up on an unknown message: it becomes dropped and is deleted
// like a sent one after Config.KeepSent. It returns ErrNotFound, or
// ErrState if the message is not unknown.
func (o *Outbox[TTx]) Drop(ctx context.Context, messageID string) error {
	err := o.inTx(ctx, func(q querier, _ TTx) error {
		_, err := o.settleUnknown(ctx, q, messageID, StateDropped)
		return err
	})
	if err == nil {
		o.event(ctx, "outbox: unknown message dropped by the operator", messageID)
	}
	return err
}

// settleUnknown moves an unknown message to state.
func (o *Outbox[TTx]) settleUnknown(ctx context.Context, q querier, messageID string, state State) (*Item, error) {
	it, err := getItem(ctx, q, messageID)
	if err != nil {
		return nil, err
	}
	if it.State != StateUnknown {
		return nil, fmt.Errorf("%w: %s is %s, not unknown", ErrState, messageID, it.State)
	}
	n, err := q.exec(ctx, `UPDATE mailer_outbox SET state = ?, data_done = 0, updated_at = ? WHERE id = ? AND state = ?`,
		string(state), time.Now().UnixMicro(), it.ID, string(StateUnknown))
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %s changed meanwhile", ErrState, messageID)
	}
	return it, nil
}

func (o *Outbox[TTx]) event(ctx context.Context, msg, messageID string, attrs ...slog.Attr) {
	o.log.LogAttrs(ctx, slog.LevelInfo, msg, append([]slog.Attr{slog.String("message_id", messageID)}, attrs...)...)
}

package outbox

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gomailer/mailer"
	"github.com/riverqueue/river"
)

// Hooks for the crash test, nil otherwise: testHookRead runs before each
// read of a message's body, with the bytes read so far; testHookSent
// after the server accepted a message, before the outbox records it.
var (
	testHookRead func(messageID string, offset int64)
	testHookSent func(messageID string)
)

// errLostClaim means the row changed under a worker (another attempt of
// the same job took over): the worker must not send.
var errLostClaim = errors.New("outbox: message taken over by another attempt")

// sendWorker delivers one message: River's worker for sendArgs.
type sendWorker[TTx any] struct {
	river.WorkerDefaults[sendArgs]
	o *Outbox[TTx]
}

// NextRetry applies Config.Backoff; the zero time leaves it to River.
func (w *sendWorker[TTx]) NextRetry(job *river.Job[sendArgs]) time.Time {
	if w.o.cfg.Backoff == nil {
		return time.Time{}
	}
	return time.Now().Add(w.o.cfg.Backoff(job.Attempt))
}

// Timeout is Config.SendTimeout.
func (w *sendWorker[TTx]) Timeout(*river.Job[sendArgs]) time.Duration { return w.o.cfg.SendTimeout }

type row struct {
	id        int64
	messageID string
	state     State
	from, to  string
	body      []byte
	attempt   int
	dataDone  bool
}

func (w *sendWorker[TTx]) Work(ctx context.Context, job *river.Job[sendArgs]) error {
	o := w.o
	mid := job.Args.MessageID
	r := row{messageID: mid}
	var dataDone int
	err := o.b.pool.queryRow(ctx, `SELECT id, state, env_from, env_to, body, attempt, data_done FROM mailer_outbox WHERE id = ?`,
		job.Args.ID).Scan(&r.id, &r.state, &r.from, &r.to, &r.body, &r.attempt, &dataDone)
	if errors.Is(err, sql.ErrNoRows) {
		return river.JobCancel(fmt.Errorf("%w: %s", ErrNotFound, mid))
	}
	if err != nil {
		return err
	}
	r.dataDone = dataDone != 0
	switch r.state {
	case StateSent:
		return nil
	case StateFailed, StateUnknown, StateDropped:
		return river.JobCancel(fmt.Errorf("%w: %s is already %s", ErrState, mid, r.state))
	case StateSending:
		// An earlier attempt was cut short (a crash; River rescued the
		// job). Before its final dot nothing can have been delivered.
		if r.dataDone && !o.cfg.AtLeastOnce {
			err := fmt.Errorf("outbox: attempt %d was cut short after the whole message was sent: %w", r.attempt, mailer.ErrOutcomeUnknown)
			if uerr := o.record(ctx, r, StateUnknown, err, nil); uerr != nil {
				return uerr
			}
			return river.JobCancel(err)
		}
		o.event(ctx, "outbox: resending after an attempt was cut short", mid,
			slog.Int("attempt", r.attempt), slog.Bool("after_final_dot", r.dataDone))
	}
	// The claim holds only if the row is as read: an earlier attempt still
	// alive that marks the end of its message meanwhile wins, and this
	// attempt then finds the mark when River runs the job again.
	n, err := o.b.pool.exec(ctx, `UPDATE mailer_outbox SET state = ?, attempt = ?, data_done = 0, updated_at = ?
WHERE id = ? AND state = ? AND attempt = ? AND data_done = ?`,
		string(StateSending), job.Attempt, time.Now().UnixMicro(), r.id, string(r.state), r.attempt, dataDone)
	if err != nil {
		return err
	}
	if n == 0 {
		return errLostClaim
	}
	r.state, r.attempt = StateSending, job.Attempt
	o.event(ctx, "outbox: sending", mid, slog.Int("attempt", job.Attempt), slog.Int64("job_id", job.ID))

	env := mailer.Envelope{From: r.from}
	if err := json.Unmarshal([]byte(r.to), &env.To); err != nil {
		return river.JobCancel(o.record(ctx, r, StateFailed, fmt.Errorf("outbox: envelope: %w", err), nil))
	}
	body := &markingReader{r: bytes.NewReader(r.body), messageID: mid, mark: func() error {
		return o.markDataDone(ctx, r)
	}}
	res, err := o.conn.SendRaw(ctx, env, body)
	if err == nil && testHookSent != nil {
		testHookSent(mid)
	}
	return o.finish(ctx, job, r, res, err, body.err)
}

// markDataDone commits that the whole message is about to be sent: from
// here on, a send cut short may have been delivered.
func (o *Outbox[TTx]) markDataDone(ctx context.Context, r row) error {
	n, err := o.b.pool.exec(ctx, `UPDATE mailer_outbox SET data_done = 1, updated_at = ? WHERE id = ? AND state = ? AND attempt = ?`,
		time.Now().UnixMicro(), r.id, string(StateSending), r.attempt)
	if err != nil {
		return fmt.Errorf("outbox: recording the end of the message: %w", err)
	}
	if n == 0 {
		return errLostClaim
	}
	return nil
}

// finish records the outcome of an attempt, whose send failed with err
// (nil if it succeeded) and whose own mark failed with markErr, and tells
// River what to do with the job.
func (o *Outbox[TTx]) finish(ctx context.Context, job *river.Job[sendArgs], r row, res *mailer.SendResult, err, markErr error) error {
	switch {
	case err == nil:
		result := &Result{Accepted: res.Accepted, Response: res.Response, Rejected: rejections(res.Rejected)}
		if rerr := o.record(ctx, r, StateSent, nil, result); rerr != nil {
			return rerr
		}
		return nil
	case errors.Is(markErr, errLostClaim) || errors.Is(err, errLostClaim):
		return errLostClaim
	case errors.Is(err, mailer.ErrOutcomeUnknown) && !o.cfg.AtLeastOnce:
		if rerr := o.record(ctx, r, StateUnknown, err, nil); rerr != nil {
			return rerr
		}
		return river.JobCancel(err)
	case retryable(err, markErr) || errors.Is(err, mailer.ErrOutcomeUnknown):
		if job.Attempt >= job.MaxAttempts {
			if rerr := o.record(ctx, r, StateFailed, fmt.Errorf("outbox: giving up after %d attempts: %w", job.Attempt, err), failedResult(err)); rerr != nil {
				return rerr
			}
			return err
		}
		if rerr := o.record(ctx, r, StateQueued, err, failedResult(err)); rerr != nil {
			return rerr
		}
		return err
	default:
		if rerr := o.record(ctx, r, StateFailed, err, failedResult(err)); rerr != nil {
			return rerr
		}
		return river.JobCancel(err)
	}
}

// record moves the row of the attempt r to state, with the attempt's error
// and result. It writes even when the job's context has ended (a timeout),
// for at most ten seconds, so that an outcome is not lost to the deadline
// that ended the send.
func (o *Outbox[TTx]) record(ctx context.Context, r row, state State, cause error, result *Result) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	res := ""
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			return err
		}
		res = string(b)
	}
	now := time.Now().UnixMicro()
	var sent int64
	if state == StateSent {
		sent = now
	}
	// A late success may still settle an attempt that a rescue marked
	// unknown meanwhile; nothing else moves an unknown message.
	settles := r.state
	if state == StateSent {
		settles = StateUnknown
	}
	n, err := o.b.pool.exec(ctx, `UPDATE mailer_outbox SET state = ?, last_error = ?, result = ?, updated_at = ?, sent_at = ?
WHERE id = ? AND attempt = ? AND state IN (?, ?)`,
		string(state), msg, res, now, sent, r.id, r.attempt, string(r.state), string(settles))
	if err != nil {
		return fmt.Errorf("outbox: recording %s: %w", state, err)
	}
	if n == 0 {
		return errLostClaim
	}
	attrs := []slog.Attr{slog.Int("attempt", r.attempt)}
	if cause != nil {
		attrs = append(attrs, slog.String("error", msg))
	}
	if result != nil && len(result.Rejected) > 0 {
		attrs = append(attrs, slog.Int("rejected", len(result.Rejected)))
	}
	o.log.LogAttrs(ctx, slog.LevelInfo, "outbox: message "+string(state), append([]slog.Attr{slog.String("message_id", r.messageID)}, attrs...)...)
	if state == StateSent && o.cfg.KeepSent < 0 {
		if _, err := o.b.pool.exec(ctx, `DELETE FROM mailer_outbox WHERE id = ?`, r.id); err != nil {
			return fmt.Errorf("outbox: deleting a sent message: %w", err)
		}
	}
	return nil
}

package outbox

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/gomailer/mailer"
	"github.com/riverqueue/river"
)

// retryable reports whether a failed attempt may be tried again later:
// what mailer.IsTemporary says of the library's error, and also an attempt
// ended by the outbox's own doing, which says nothing about the message:
// the workers stopping (context.Canceled, mailer.ErrClosed), or the
// outbox's own write failing while the library read the body (markErr),
// before the final dot.
func retryable(err, markErr error) bool {
	return markErr != nil || errors.Is(err, context.Canceled) || errors.Is(err, mailer.ErrClosed) ||
		mailer.IsTemporary(err)
}

// rejections turns the library's refused recipients into stored ones.
func rejections(rs []mailer.RejectedRecipient) []Rejection {
	var out []Rejection
	for _, r := range rs {
		rej := Rejection{Address: r.Address}
		var serr *mailer.SMTPError
		if errors.As(r.Err, &serr) {
			rej.Code = serr.Code
			rej.EnhancedCode = serr.EnhancedCode.String()
			rej.Message = serr.Message
		} else if r.Err != nil {
			rej.Message = r.Err.Error()
		}
		out = append(out, rej)
	}
	return out
}

// failedResult is the per-recipient result of a failed attempt, nil when
// the failure was not about recipients.
func failedResult(err error) *Result {
	var rerr *mailer.RecipientsError
	if !errors.As(err, &rerr) {
		return nil
	}
	return &Result{Rejected: rejections(rerr.Rejected)}
}

// markingReader reads a message's body and, when it reaches the end and
// before it returns io.EOF (after which the library sends the final dot),
// commits with mark that the whole message is on its way. If mark fails,
// the read fails and the library drops the connection without the dot.
type markingReader struct {
	r interface {
		io.Reader
		Len() int
	}
	messageID string
	offset    int64
	mark      func() error
	marked    bool
	err       error // mark's error, if it failed
}

func (m *markingReader) Read(p []byte) (int, error) {
	if testHookRead != nil {
		testHookRead(m.messageID, m.offset)
	}
	n, err := m.r.Read(p)
	m.offset += int64(n)
	if err == io.EOF && !m.marked {
		if merr := m.mark(); merr != nil {
			m.err = merr
			return n, merr
		}
		m.marked = true
	}
	return n, err
}

// Len is the size still to read, for the library's SIZE check.
func (m *markingReader) Len() int { return m.r.Len() }

// cleanupArgs is the periodic job that deletes delivered and dropped
// messages older than Config.KeepSent.
type cleanupArgs struct{}

func (cleanupArgs) Kind() string { return "mailer_outbox_cleanup" }

type cleanupWorker[TTx any] struct {
	river.WorkerDefaults[cleanupArgs]
	o *Outbox[TTx]
}

func (w *cleanupWorker[TTx]) Work(ctx context.Context, _ *river.Job[cleanupArgs]) error {
	_, err := w.o.cleanup(ctx, w.o.cfg.KeepSent)
	return err
}

// cleanup deletes the sent and dropped messages older than keep and
// returns how many.
func (o *Outbox[TTx]) cleanup(ctx context.Context, keep time.Duration) (int64, error) {
	before := time.Now().Add(-keep).UnixMicro()
	return o.b.pool.exec(ctx, `DELETE FROM mailer_outbox WHERE state IN (?, ?) AND updated_at < ?`,
		string(StateSent), string(StateDropped), before)
}

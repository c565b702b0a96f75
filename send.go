package mailer

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"
)

// buildFunc returns the transaction for one attempt of a send on s.
type buildFunc func(s *session) (*transaction, error)

// deliver sends one message, the transaction made by build for each
// attempt: it waits for the rate limit, retries as WithRetry allows (when
// rewind, if not nil, says the body can be sent again), merges the
// results of retried recipients, and reports the outcome.
func (c *Connection) deliver(ctx context.Context, build buildFunc, rewind func() bool) (*SendResult, error) {
	done, err := c.begin()
	if err != nil {
		return nil, err
	}
	defer done()
	// Close ends the rate-limit wait and the pause before a retry too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stopCtx, cancel)()
	a := &attempt{c: c, build: build, rewind: rewind, start: time.Now()}
	a.res, a.err = a.run(ctx, nil)
	return a.finish(ctx)
}

// attempt is the state of one message's attempts.
type attempt struct {
	c       *Connection
	build   buildFunc
	rewind  func() bool // makes the body ready to be read again; nil if it always is
	start   time.Time
	n       int // attempts made
	id      string
	size    int64
	session int  // the session of the last attempt
	partial bool // the message goes to the recipients accepted

	res *SendResult // the last attempt's outcome
	err error
}

// run makes one attempt, to the recipients only when not nil.
func (a *attempt) run(ctx context.Context, only []string) (*SendResult, error) {
	a.n++
	c := a.c
	if c.limiter != nil {
		waited, err := c.limiter.wait(ctx)
		if waited {
			c.stats.rateLimitWaits.Add(1)
		}
		if err != nil {
			return nil, c.closedErr(err)
		}
	}
	var res *SendResult
	err := c.run(ctx, func(ctx context.Context, s *session) error {
		tx, err := a.build(s)
		if err != nil {
			return err
		}
		if only != nil {
			tx.env.To = slices.DeleteFunc(slices.Clone(tx.env.To), func(to string) bool { return !slices.Contains(only, to) })
		}
		defer tx.done()
		a.id, a.session = tx.id, s.id
		res, err = s.send(ctx, tx)
		a.size, a.partial = tx.written, tx.partial
		return err
	}, a.rewind)
	return res, c.closedErr(err)
}

// finish retries after the first outcome as the policy allows and returns
// the message's result.
func (a *attempt) finish(ctx context.Context) (*SendResult, error) {
	c, policy := a.c, a.c.cfg.retry
	var total *SendResult // what was delivered, once something was
	var only []string     // the recipients of the last attempt, nil for all
	res, err := a.res, a.err
	for {
		c.observe(err)
		var re *RecipientsError
		if total == nil && a.partial && errors.As(err, &re) {
			// Nothing delivered, but with partial delivery the recipients
			// refused for a while may be tried again without the others.
			total, err = &SendResult{Rejected: slices.Clone(re.Rejected)}, nil
		} else {
			total = merge(total, only, res, err)
		}
		if a.n >= policy.Attempts {
			break
		}
		if total != nil {
			if only = retryRecipients(total); len(only) == 0 {
				break
			}
		} else if !retryable(err) {
			break
		}
		if a.rewind != nil && !a.rewind() {
			// The body cannot be read again.
			break
		}
		c.stats.retries.Add(1)
		if policy.pause(ctx, a.n) != nil {
			break
		}
		res, err = a.run(ctx, only)
	}
	switch {
	case total != nil && len(total.Accepted) == 0:
		err, total = &RecipientsError{Rejected: total.Rejected}, nil
	case total != nil:
		total.MessageID, total.Attempts = a.id, a.n
		err = nil
	}
	c.report(a.session, a.id, total, err, a.n, a.size, time.Since(a.start))
	return total, err
}

// merge folds an attempt's outcome, to the recipients only (nil for all),
// into what was delivered so far, total (nil if nothing yet).
func merge(total *SendResult, only []string, res *SendResult, err error) *SendResult {
	if total == nil {
		if err != nil {
			return nil
		}
		return &SendResult{Accepted: res.Accepted, Rejected: res.Rejected, Response: res.Response}
	}
	total.Rejected = slices.DeleteFunc(total.Rejected, func(r RejectedRecipient) bool { return slices.Contains(only, r.Address) })
	var re *RecipientsError
	switch {
	case err == nil:
		total.Accepted = append(total.Accepted, res.Accepted...)
		total.Rejected = append(total.Rejected, res.Rejected...)
		total.Response = res.Response
	case errors.As(err, &re):
		total.Rejected = append(total.Rejected, re.Rejected...)
	default:
		for _, to := range only {
			total.Rejected = append(total.Rejected, RejectedRecipient{Address: to, Err: err})
		}
	}
	return total
}

// retryRecipients returns the refused recipients whose refusal was
// temporary.
func retryRecipients(res *SendResult) []string {
	var out []string
	for _, r := range res.Rejected {
		if retryable(r.Err) {
			out = append(out, r.Address)
		}
	}
	return out
}

// observe slows the rate limit down when a reply says the client sends too
// fast.
func (c *Connection) observe(err error) {
	if c.limiter != nil && err != nil && isRateReply(err) {
		c.limiter.slowDown()
		c.stats.slowDowns.Add(1)
	}
}

// report counts a message's outcome and logs it in one line.
func (c *Connection) report(session int, id string, res *SendResult, err error, attempts int, size int64, d time.Duration) {
	class := ""
	if err == nil {
		c.stats.sent.Add(1)
	} else {
		class = failureClass(err)
		c.stats.failed(class)
	}
	if !c.sink.logs() {
		return
	}
	attrs := []slog.Attr{slog.Int("session", session), slog.String("message_id", id), slog.Int64("size", size),
		slog.Duration("duration", d), slog.Int("attempts", attempts)}
	if err == nil {
		attrs = append(attrs, slog.Int("recipients", len(res.Accepted)), slog.Int("refused", len(res.Rejected)),
			slog.String("response", res.Response))
		c.sink.message(slog.LevelInfo, "smtp message sent", attrs...)
		return
	}
	attrs = append(attrs, slog.String("class", class), slog.String("error", err.Error()))
	c.sink.message(slog.LevelWarn, "smtp message failed", attrs...)
}

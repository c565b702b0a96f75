package mailer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The adaptive part of the rate limit: a reply that says the client is
// sending too fast halves the rate, down to 1/64 of the configured one,
// and the configured rate comes back once slowDownFor has passed without
// another such reply.
const (
	slowDownFor   = time.Minute
	slowDownFloor = 64
)

// rateConfig is what WithRateLimit sets.
type rateConfig struct {
	limit rate.Limit
	burst int
}

// WithRateLimit lets the Connection start at most n messages per interval
// per, across all its sessions, with bursts of up to burst messages at
// once (golang.org/x/time/rate's token bucket). A send waits for its turn
// before it takes a session; the wait ends with the send's context.
// Retries count as messages.
//
// The limit adapts: a 421, 450, 451, 452 or 454 reply whose enhanced code
// is 4.7.x or absent and whose text speaks of a rate, a limit, throttling
// or "too many" halves the rate (down to 1/64 of n per per), and the
// configured rate returns after a minute without such a reply. n, per and
// burst below 1 are errors.
func WithRateLimit(n int, per time.Duration, burst int) Option {
	return func(c *config) error {
		if n < 1 || per <= 0 || burst < 1 {
			return fmt.Errorf("mailer: rate limit needs n >= 1, per > 0 and burst >= 1, got %d per %v, burst %d", n, per, burst)
		}
		c.rate = &rateConfig{limit: rate.Limit(float64(n) / per.Seconds()), burst: burst}
		return nil
	}
}

// limiter is a Connection's rate limit.
type limiter struct {
	lim  *rate.Limiter
	base rate.Limit

	mu        sync.Mutex
	slowUntil time.Time // zero unless slowed down
}

func newLimiter(rc *rateConfig) *limiter {
	if rc == nil {
		return nil
	}
	return &limiter{lim: rate.NewLimiter(rc.limit, rc.burst), base: rc.limit}
}

// wait blocks until a message may start or ctx ends; waited reports
// whether it had to wait at all.
func (l *limiter) wait(ctx context.Context) (waited bool, err error) {
	l.restore()
	if l.lim.Allow() {
		return false, nil
	}
	r := l.lim.Reserve()
	d := r.Delay()
	if d == 0 {
		return false, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true, nil
	case <-ctx.Done():
		r.Cancel()
		return true, fmt.Errorf("mailer: waiting for the rate limit: %w", ctx.Err())
	}
}

// allow takes a token if one is there now, without waiting.
func (l *limiter) allow() bool {
	l.restore()
	return l.lim.Allow()
}

// restore brings the configured rate back once the slow-down is over.
func (l *limiter) restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.slowUntil.IsZero() && time.Now().After(l.slowUntil) {
		l.slowUntil = time.Time{}
		l.lim.SetLimit(l.base)
	}
}

// slowDown halves the rate for a while.
func (l *limiter) slowDown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lim.SetLimit(max(l.lim.Limit()/2, l.base/slowDownFloor))
	l.slowUntil = time.Now().Add(slowDownFor)
}

// isRateReply reports whether err, or a recipient's refusal within it,
// is a server saying that the client sends too fast (the rule in
// WithRateLimit's documentation).
func isRateReply(err error) bool {
	var re *RecipientsError
	if errors.As(err, &re) {
		for _, r := range re.Rejected {
			if isRateReply(r.Err) {
				return true
			}
		}
		return false
	}
	var se *SMTPError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code {
	case 421, 450, 451, 452, 454:
	default:
		return false
	}
	if se.EnhancedCode != (EnhancedCode{}) && (se.EnhancedCode[0] != 4 || se.EnhancedCode[1] != 7) {
		return false
	}
	text := strings.ToLower(se.Message)
	for _, w := range []string{"rate", "limit", "throttl", "too many"} {
		if strings.Contains(text, w) {
			return true
		}
	}
	return false
}

package mailer

import (
	"errors"
	"sync/atomic"
)

// Stats are a Connection's counters since NewConnection, for a service to
// export as metrics.
type Stats struct {
	// Sent counts messages the server accepted (for at least one
	// recipient).
	Sent int64
	// FailedPermanent counts messages that failed for good: a 5xx reply,
	// invalid input, a configuration or certificate problem.
	FailedPermanent int64
	// FailedTemporary counts messages that failed in a way that may pass
	// (IsTemporary), after any retries.
	FailedTemporary int64
	// FailedUnknown counts messages whose outcome is unknown
	// (ErrOutcomeUnknown): they may have been delivered.
	FailedUnknown int64
	// Retries counts attempts after a message's first (WithRetry).
	Retries int64
	// RateLimitWaits counts sends that waited for the rate limit, and
	// SlowDowns the replies that slowed it down.
	RateLimitWaits int64
	SlowDowns      int64
	// SessionsOpened and SessionsClosed count SMTP sessions; of the
	// closed ones, SessionsRetired were closed by the pool's limits (idle
	// timeout, messages per session, lifetime) and HealthChecksFailed
	// were found dead by the health check.
	SessionsOpened     int64
	SessionsClosed     int64
	SessionsRetired    int64
	HealthChecksFailed int64
	// Idle is the number of sessions open and idle now.
	Idle int
}

// counters are the atomic counters behind Stats.
type counters struct {
	sent, failedPermanent, failedTemporary, failedUnknown atomic.Int64
	retries, rateLimitWaits, slowDowns                    atomic.Int64
	sessionsOpened, sessionsClosed, sessionsRetired       atomic.Int64
	healthCheckFailures                                   atomic.Int64
}

// Stats returns the Connection's counters.
func (c *Connection) Stats() Stats {
	c.mu.Lock()
	idle := len(c.idle)
	c.mu.Unlock()
	s := &c.stats
	return Stats{
		Sent: s.sent.Load(), FailedPermanent: s.failedPermanent.Load(), FailedTemporary: s.failedTemporary.Load(),
		FailedUnknown: s.failedUnknown.Load(), Retries: s.retries.Load(), RateLimitWaits: s.rateLimitWaits.Load(),
		SlowDowns: s.slowDowns.Load(), SessionsOpened: s.sessionsOpened.Load(), SessionsClosed: s.sessionsClosed.Load(),
		SessionsRetired: s.sessionsRetired.Load(), HealthChecksFailed: s.healthCheckFailures.Load(), Idle: idle,
	}
}

// failureClass names the kind of a send's failure, for Stats and the log.
func failureClass(err error) string {
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		return "unknown"
	case IsTemporary(err):
		return "temporary"
	}
	return "permanent"
}

func (s *counters) failed(class string) {
	switch class {
	case "unknown":
		s.failedUnknown.Add(1)
	case "temporary":
		s.failedTemporary.Add(1)
	default:
		s.failedPermanent.Add(1)
	}
}

package mailer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults of the pool's lifecycle. Servers drop an idle client after 60
// to 300 seconds (RFC 5321 4.5.3.2.7 asks for 5 minutes; providers and
// relays often use less): a session idle for 30 s is closed by the client
// first, with QUIT, rather than found dead by the next send.
const (
	defaultIdleTimeout = 30 * time.Second
	// A pooled session that idled longer than this is probed with NOOP
	// before its next transaction. With the default idle timeout no
	// session idles that long; it matters when the idle timeout is longer
	// or off.
	defaultHealthCheckAfter = 30 * time.Second
)

// closeQuitTimeout bounds the wait for the QUIT replies when closing.
const closeQuitTimeout = 2 * time.Second

// WithIdleTimeout closes a pooled session, with QUIT, once it has been
// idle for d, in the background. The default is 30 seconds, below the
// usual server timeouts; 0 keeps idle sessions until Close. A negative d
// is an error.
func WithIdleTimeout(d time.Duration) Option {
	return limitOption("idle timeout", d, func(c *config) *time.Duration { return &c.idleTimeout })
}

// WithMaxMessagesPerSession retires a session, with QUIT, once it has
// carried n transactions (providers cap messages per connection, often at
// 100). A session is retired after a transaction, never during one; SendAll
// moves to a new session at the limit. 0, the default, means no limit; a
// negative n is an error.
func WithMaxMessagesPerSession(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("mailer: messages per session must not be negative, got %d", n)
		}
		c.maxMessages = n
		return nil
	}
}

// WithMaxSessionLifetime retires a session, with QUIT, once it is older
// than d, after the transaction in progress. 0, the default, means no
// limit; a negative d is an error.
func WithMaxSessionLifetime(d time.Duration) Option {
	return limitOption("session lifetime", d, func(c *config) *time.Duration { return &c.maxLifetime })
}

// WithHealthCheck sends NOOP on a pooled session that has been idle longer
// than d before using it, and replaces it if the server does not answer;
// the default is 30 seconds. 0 turns the check off. On a server that
// announces PIPELINING a session idle for over 100 ms is also checked for
// a close or a 421 it was sent, which costs no round trip. A negative d is
// an error.
func WithHealthCheck(d time.Duration) Option {
	return limitOption("health-check age", d, func(c *config) *time.Duration { return &c.healthCheckAfter })
}

// limitOption sets a duration of the pool, where 0 means "off".
func limitOption(name string, d time.Duration, field func(*config) *time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("mailer: %s must not be negative, got %v", name, d)
		}
		*field(c) = d
		return nil
	}
}

// spent reports whether s reached a limit of the pool and must be retired
// instead of being used again.
func (s *session) spent() bool {
	cfg := s.cfg
	return cfg.maxMessages > 0 && s.messages >= cfg.maxMessages ||
		cfg.maxLifetime > 0 && time.Since(s.opened) >= cfg.maxLifetime
}

// begin registers an operation in progress, which Shutdown waits for; it
// fails once Close or Shutdown has started. Call the returned function
// when the operation ends.
func (c *Connection) begin() (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.draining {
		return nil, ErrClosed
	}
	c.active++
	return c.end, nil
}

// end is what begin returns: the operation is over.
func (c *Connection) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active--
	c.signalDrainedLocked()
}

// signalDrainedLocked closes drained once Shutdown waits and nothing is in
// progress. c.mu is held.
func (c *Connection) signalDrainedLocked() {
	if c.drained != nil && c.active == 0 && !c.drainedShut {
		c.drainedShut = true
		close(c.drained)
	}
}

// Close interrupts every operation in flight (a send interrupted after the
// final dot fails with ErrOutcomeUnknown), sends QUIT on every idle session
// at once, waiting at most two seconds for the replies, and closes the
// connections. Further calls fail with ErrClosed. Close is idempotent and
// always returns nil. Use Shutdown to let the sends in flight finish.
func (c *Connection) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeQuitTimeout)
	defer cancel()
	c.closeIdle(ctx)
	return nil
}

// Shutdown closes the Connection gracefully, like http.Server's Shutdown:
// new sends fail with ErrClosed at once, the sends in flight (SendAll
// included) run to their end, and then every idle session is sent QUIT, all
// at once. If ctx ends first, Shutdown does what Close does (interrupting
// the sends still in flight) and returns ctx's error; otherwise it returns
// nil. No goroutine of the Connection outlives Shutdown or Close.
func (c *Connection) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.draining = true
	if c.drained == nil {
		c.drained = make(chan struct{})
	}
	c.signalDrainedLocked()
	drained := c.drained
	c.mu.Unlock()
	select {
	case <-drained:
	case <-ctx.Done():
		// The sends still in flight end at once, on their callers'
		// goroutines (one of them may be the caller of Shutdown, inside
		// a SendAll loop).
		_ = c.Close()
		return ctx.Err()
	}
	c.closeIdle(ctx)
	return nil
}

// closeIdle marks the Connection closed, interrupts what is in flight,
// QUITs the idle sessions in parallel within ctx and waits for the
// sessions being retired in the background.
func (c *Connection) closeIdle(ctx context.Context) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.bg.Wait()
		return
	}
	c.closed = true
	close(c.done)
	c.stop()
	idle := c.idle
	c.idle = nil
	for _, s := range idle {
		if s.idleTimer != nil {
			s.idleTimer.Stop()
		}
	}
	c.mu.Unlock()
	c.stats.sessionsClosed.Add(int64(len(idle)))
	var wg sync.WaitGroup
	for _, s := range idle {
		wg.Go(func() { s.quit(ctx, closeQuitTimeout) })
	}
	wg.Wait()
	c.bg.Wait()
}

// acquire takes a session slot and returns an idle session, checked with
// NOOP if it idled long, or a new one.
func (c *Connection) acquire(ctx context.Context) (*session, error) {
	select {
	case c.slots <- struct{}{}:
	default:
		// Every slot is taken: a SendAll worker waiting for its next
		// message gives its session back (see stream), so that a retry or
		// a Send is not left waiting behind streams that have nothing to
		// do.
		select {
		case c.wantSlot <- struct{}{}:
		default:
		}
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("mailer: waiting for a session: %w", ctx.Err())
		case <-c.done:
			return nil, ErrClosed
		}
	}
	s, id, err := c.takeIdle()
	if err != nil {
		<-c.slots
		return nil, err
	}
	if s != nil && c.cfg.healthCheckAfter > 0 && time.Since(s.lastUsed) > c.cfg.healthCheckAfter {
		if err := s.noop(ctx); err != nil {
			c.stats.healthCheckFailures.Add(1)
			c.stats.sessionsClosed.Add(1)
			s.close()
			if ctx.Err() != nil {
				<-c.slots
				return nil, err
			}
			s = nil
		}
	}
	if s == nil {
		var err error
		if s, err = dial(ctx, c.cfg, c.sink, id); err != nil {
			<-c.slots
			return nil, err
		}
		c.stats.sessionsOpened.Add(1)
		st, ok := s.t.tlsState()
		c.mu.Lock()
		c.ext = s.ext
		c.tls = nil
		if ok {
			c.tls = &st
		}
		c.mu.Unlock()
	}
	return s, nil
}

// takeIdle returns the most recently used idle session that has not
// reached a limit, retiring those that have, or nil, and the id for a new
// session.
func (c *Connection) takeIdle() (*session, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, ErrClosed
	}
	c.nextID++
	for n := len(c.idle); n > 0; n = len(c.idle) {
		s := c.idle[n-1]
		c.idle = c.idle[:n-1]
		if s.idleTimer != nil {
			s.idleTimer.Stop()
		}
		if !s.spent() {
			return s, c.nextID, nil
		}
		c.retireLocked(s, "limit")
	}
	return nil, c.nextID, nil
}

// release returns s to the pool, retires it if it reached a limit, or
// closes it if it is dead or the Connection was closed.
func (c *Connection) release(s *session) {
	defer func() { <-c.slots }()
	if s.dead {
		c.stats.sessionsClosed.Add(1)
		s.close()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		c.stats.sessionsClosed.Add(1)
		s.close()
	case s.spent():
		c.retireLocked(s, "limit")
	default:
		c.idle = append(c.idle, s)
		s.idleSince = time.Now()
		if d := c.cfg.idleTimeout; d > 0 {
			if s.idleTimer == nil {
				s.idleTimer = time.AfterFunc(d, func() { c.expire(s) })
			} else {
				s.idleTimer.Reset(d)
			}
		}
	}
}

// expire retires s if it is still idle when its idle timeout fires.
func (c *Connection) expire(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.idle, s)
	// A timer that fired while the session was taken, used and put back
	// finds it idle for less than the timeout: its new timer decides.
	if c.closed || i < 0 || time.Since(s.idleSince) < c.cfg.idleTimeout {
		return
	}
	c.idle = slices.Delete(c.idle, i, i+1)
	c.retireLocked(s, "idle")
}

// retireLocked sends QUIT on s in the background, which Close waits for.
// c.mu is held.
func (c *Connection) retireLocked(s *session, why string) {
	c.stats.sessionsClosed.Add(1)
	c.stats.sessionsRetired.Add(1)
	s.sink.event(s.id, "smtp session retired", slog.String("reason", why), slog.Int("messages", s.messages),
		slog.Duration("age", time.Since(s.opened)))
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		// Not bound to Close: its QUIT gets the same 2 s as the idle
		// sessions' that Close sends.
		s.quit(context.Background(), closeQuitTimeout)
	}()
}

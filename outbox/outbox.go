package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gomailer/mailer"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
)

// Queue is the River queue the outbox's jobs run in.
const Queue = "mailer_outbox"

// Config configures an Outbox. The zero value is usable.
type Config struct {
	// Workers is how many messages one process works on at once (River's
	// MaxWorkers for Queue); 0 means 32. The Connection's own pool
	// (mailer.WithMaxConnections) bounds the SMTP sessions they share;
	// several workers a session keep the sessions busy while River records
	// the jobs that finished.
	Workers int
	// InsertOnly makes an Outbox that enqueues and queries but delivers
	// nothing: no worker runs in this process, and the Connection may be
	// nil.
	InsertOnly bool
	// MaxAttempts is how many times a message is tried before it fails
	// for good; 0 means 20.
	MaxAttempts int
	// Backoff gives the wait before attempt+1 after a temporary failure of
	// attempt (counted from 1); nil means River's default policy (about
	// attempt⁴ seconds).
	Backoff func(attempt int) time.Duration
	// SendTimeout bounds one delivery attempt (River's job timeout); 0
	// means 15 minutes, more than the 10 minutes RFC 5321 allows for the
	// reply after the message.
	SendTimeout time.Duration
	// RescueAfter is how long a job may stay running before River's
	// rescuer hands it to a worker again, which is how a delivery cut
	// short by a crash is found; it must exceed SendTimeout, by a minute
	// or more in production so that an attempt that timed out has
	// recorded its outcome first. 0 means SendTimeout plus five minutes.
	RescueAfter time.Duration
	// KeepSent is how long a delivered message stays in the outbox (body
	// and results) before it is deleted; 0 means 24 hours, a negative
	// value deletes it as soon as it is delivered. While it is kept, an
	// enqueue with the same Message-ID is recognised as a duplicate.
	KeepSent time.Duration
	// AtLeastOnce resends a message whose delivery was cut short after
	// the final dot instead of marking it unknown: no message is left for
	// the operator, at the price of an occasional duplicate.
	AtLeastOnce bool
	// PollInterval is how often a worker looks for jobs inserted by other
	// processes when the database cannot notify it (SQLite); 0 means
	// River's default of one second.
	PollInterval time.Duration
	// FetchCooldown is the least time between two fetches of jobs by one
	// process, so also the longest a worker that finished a message may
	// wait for the next; 0 means 5 ms (River's own default, 100 ms, caps a
	// process at Workers messages per 100 ms). It does not exceed
	// PollInterval.
	FetchCooldown time.Duration
	// ID names this process's River client; it must be unique among the
	// processes sharing the database. "" lets River choose one.
	ID string
	// Logger receives one Info record per state change of a message;
	// nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	out := Config{}
	if c != nil {
		out = *c
	}
	if out.Workers <= 0 {
		out.Workers = 32
	}
	if out.MaxAttempts <= 0 {
		out.MaxAttempts = 20
	}
	if out.SendTimeout <= 0 {
		out.SendTimeout = 15 * time.Minute
	}
	if out.RescueAfter <= 0 {
		out.RescueAfter = out.SendTimeout + 5*time.Minute
	}
	if out.KeepSent == 0 {
		out.KeepSent = 24 * time.Hour
	}
	if out.FetchCooldown <= 0 {
		out.FetchCooldown = 5 * time.Millisecond
	}
	if out.PollInterval > 0 {
		out.FetchCooldown = min(out.FetchCooldown, out.PollInterval)
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

// backend is what differs between SQLite and PostgreSQL.
type backend[TTx any] struct {
	name     string
	driver   riverdriver.Driver[TTx]
	pool     querier
	wrap     func(TTx) querier
	begin    func(ctx context.Context) (TTx, error)
	commit   func(ctx context.Context, tx TTx) error
	rollback func(ctx context.Context, tx TTx) error
	lock     string     // a statement that serialises migrations, or ""
	schema   [][]string // our migrations' statements, one list a version
}

// Outbox is a durable queue of messages in a database, delivered by River
// workers through a *mailer.Connection. TTx is the database's transaction
// type: *sql.Tx for SQLite (NewSQLite), pgx.Tx for PostgreSQL
// (NewPostgres). An Outbox is safe for concurrent use.
type Outbox[TTx any] struct {
	b      backend[TTx]
	cfg    Config
	conn   *mailer.Connection
	log    *slog.Logger
	client *river.Client[TTx]
}

func newOutbox[TTx any](b backend[TTx], conn *mailer.Connection, cfg *Config) (*Outbox[TTx], error) {
	c := cfg.withDefaults()
	if conn == nil && !c.InsertOnly {
		return nil, errors.New("outbox: a nil Connection needs Config.InsertOnly")
	}
	if c.RescueAfter <= c.SendTimeout {
		return nil, fmt.Errorf("outbox: RescueAfter (%v) must exceed SendTimeout (%v)", c.RescueAfter, c.SendTimeout)
	}
	o := &Outbox[TTx]{b: b, cfg: c, conn: conn, log: c.Logger}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &sendWorker[TTx]{o: o}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &cleanupWorker[TTx]{o: o}); err != nil {
		return nil, err
	}
	rc := &river.Config{
		ID:                   c.ID,
		MaxAttempts:          c.MaxAttempts,
		JobTimeout:           c.SendTimeout,
		RescueStuckJobsAfter: c.RescueAfter,
		FetchPollInterval:    c.PollInterval,
		FetchCooldown:        c.FetchCooldown,
		Workers:              workers,
		Logger:               slog.New(discardBelowWarn{c.Logger.Handler()}),
	}
	if !c.InsertOnly {
		rc.Queues = map[string]river.QueueConfig{Queue: {MaxWorkers: c.Workers}}
		rc.PeriodicJobs = []*river.PeriodicJob{river.NewPeriodicJob(
			river.PeriodicInterval(cleanupInterval(c.KeepSent)),
			func() (river.JobArgs, *river.InsertOpts) { return cleanupArgs{}, nil },
			&river.PeriodicJobOpts{RunOnStart: true},
		)}
	}
	client, err := river.NewClient(b.driver, rc)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	o.client = client
	return o, nil
}

// cleanupInterval is how often delivered messages past KeepSent are
// deleted.
func cleanupInterval(keep time.Duration) time.Duration {
	return min(max(keep/2, time.Second), 5*time.Minute)
}

// Start starts the workers; it returns River's error if they cannot start
// (the database unreachable, the migrations not run). An InsertOnly Outbox
// needs no Start.
func (o *Outbox[TTx]) Start(ctx context.Context) error {
	if err := o.client.Start(ctx); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// Stop stops taking new messages and waits, until ctx ends, for the
// deliveries in progress to finish. It returns ctx's error if they did not
// finish in time.
func (o *Outbox[TTx]) Stop(ctx context.Context) error {
	return o.client.Stop(ctx)
}

// Client returns the River client the Outbox runs on, for River's own
// tools (subscriptions, queue pauses, River UI).
func (o *Outbox[TTx]) Client() *river.Client[TTx] { return o.client }

// discardBelowWarn passes River's own log records on only from Warn up, so
// that the outbox's state events are not drowned in River's.
type discardBelowWarn struct{ slog.Handler }

func (h discardBelowWarn) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h discardBelowWarn) WithAttrs(a []slog.Attr) slog.Handler {
	return discardBelowWarn{h.Handler.WithAttrs(a)}
}

func (h discardBelowWarn) WithGroup(name string) slog.Handler {
	return discardBelowWarn{h.Handler.WithGroup(name)}
}

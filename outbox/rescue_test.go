package outbox

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// TestRescueRacesLiveAttempt runs the same job twice at once, as River's
// rescuer does when it takes an attempt for dead that is in fact alive:
// the first attempt is held in the middle of its data while the second
// claims the message and delivers it; the first must then fail its mark
// and never send its final dot.
// rescueSetup returns an outbox whose worker the test runs itself, with one
// message queued, and a function that makes that message's job at an
// attempt.
func rescueSetup(t *testing.T, srv *mailertest.Server) (*Outbox[*sql.Tx], *Item, func(attempt int) *river.Job[sendArgs]) {
	t.Helper()
	conn := newConn(t, srv.Addr(), mailer.WithMaxConnections(2))
	cfg := fastConfig()
	cfg.InsertOnly = true
	ob, err := NewSQLite(openSQLite(t), conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	it, err := ob.Enqueue(ctx, testMessage(1))
	if err != nil {
		t.Fatal(err)
	}
	return ob, it, func(attempt int) *river.Job[sendArgs] {
		return &river.Job[sendArgs]{
			JobRow: &rivertype.JobRow{ID: it.JobID, Attempt: attempt, MaxAttempts: 20},
			Args:   sendArgs{ID: it.ID, MessageID: it.MessageID},
		}
	}
}

// checkSentOnce fails the test unless the message is sent at attempt and
// the server got it once.
func checkSentOnce(t *testing.T, ob *Outbox[*sql.Tx], srv *mailertest.Server, it *Item, attempt int) {
	t.Helper()
	got, err := ob.Get(context.Background(), it.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateSent || got.Attempt != attempt {
		t.Errorf("message %s at attempt %d, want sent at attempt %d", got.State, got.Attempt, attempt)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("server got %d messages, want 1", n)
	}
}

// TestRescueRacesLiveAttempt runs the same job twice at once, as River's
// rescuer does when it takes an attempt for dead that is in fact alive:
// the first attempt is held in the middle of its data while the second
// claims the message and delivers it; the first must then fail its mark
// and never send its final dot.
func TestRescueRacesLiveAttempt(t *testing.T) {
	srv := mailertest.NewServer()
	defer srv.Close()
	ob, it, job := rescueSetup(t, srv)
	ctx := context.Background()
	held, release := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	testHookRead = func(_ string, offset int64) {
		if offset > 0 && once.CompareAndSwap(false, true) {
			close(held)
			<-release
		}
	}
	defer func() { testHookRead = nil }()

	w := &sendWorker[*sql.Tx]{o: ob}
	first := make(chan error, 1)
	go func() { first <- w.Work(ctx, job(1)) }()
	<-held
	if err := w.Work(ctx, job(2)); err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	close(release)
	if err := <-first; !errors.Is(err, errLostClaim) {
		t.Errorf("first attempt: %v, want errLostClaim", err)
	}
	checkSentOnce(t, ob, srv, it, 2)
}

// TestRescueAfterLiveAttemptsMark is the other order: the first attempt
// has marked the end of its message and is waiting for the outcome (here:
// it has it, and has not recorded it yet) when the second runs. The second
// must not send; it records unknown, and the first's late success settles
// the message as sent.
func TestRescueAfterLiveAttemptsMark(t *testing.T) {
	srv := mailertest.NewServer()
	defer srv.Close()
	ob, it, job := rescueSetup(t, srv)
	ctx := context.Background()
	held, release := make(chan struct{}), make(chan struct{})
	testHookSent = func(string) {
		close(held)
		<-release
	}
	defer func() { testHookSent = nil }()

	w := &sendWorker[*sql.Tx]{o: ob}
	first := make(chan error, 1)
	go func() { first <- w.Work(ctx, job(1)) }()
	<-held
	var cancel *river.JobCancelError
	if err := w.Work(ctx, job(2)); !errors.As(err, &cancel) || !errors.Is(err, mailer.ErrOutcomeUnknown) {
		t.Fatalf("second attempt: %v, want the job cancelled with ErrOutcomeUnknown", err)
	}
	if got, err := ob.Get(ctx, it.MessageID); err != nil || got.State != StateUnknown {
		t.Fatalf("after the second attempt: %+v, %v; want unknown", got, err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first attempt: %v", err)
	}
	checkSentOnce(t, ob, srv, it, 1)
}

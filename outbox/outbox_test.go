package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

// quiet is a logger for tests that do not look at the events.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fastConfig retries at once and polls often, for tests.
func fastConfig() *Config {
	return &Config{
		Backoff:      func(int) time.Duration { return 10 * time.Millisecond },
		PollInterval: 50 * time.Millisecond,
		Logger:       quiet,
	}
}

func newConn(t testing.TB, addr string, opts ...mailer.Option) *mailer.Connection {
	t.Helper()
	c, err := mailer.NewConnection(addr, append([]mailer.Option{mailer.WithSecurity(mailer.SecurityNone),
		mailer.WithTimeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func openSQLite(t testing.TB) *sql.DB {
	t.Helper()
	db, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "outbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// startSQLite returns a migrated, started Outbox on a new SQLite file.
func startSQLite(t testing.TB, conn *mailer.Connection, cfg *Config) (*Outbox[*sql.Tx], *sql.DB) {
	t.Helper()
	db := openSQLite(t)
	ob, err := NewSQLite(db, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	migrateAndStart(t, ob, cfg)
	return ob, db
}

func testMessage(i int) *mailer.Message {
	return &mailer.Message{
		From:    mailer.Recipient{Address: "sender@example.test"},
		To:      []mailer.Recipient{{Address: fmt.Sprintf("rcpt%d@example.test", i)}},
		Subject: fmt.Sprintf("message %d", i),
		Text:    strings.Repeat(fmt.Sprintf("line of message %d\n", i), 20),
	}
}

// waitState polls until the message is in state, failing the test after
// timeout.
func waitState[TTx any](t testing.TB, ob *Outbox[TTx], messageID string, want State, timeout time.Duration) *Item {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		it, err := ob.Get(context.Background(), messageID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		if it != nil && it.State == want {
			return it
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s: %+v after %v, want state %s", messageID, it, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSQLiteDeliverAfterTemporaryFailures(t *testing.T) {
	srv := mailertest.NewServer(
		mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply421, Conn: 1}),
		mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply421, Conn: 2}))
	defer srv.Close()
	ob, _ := startSQLite(t, newConn(t, srv.Addr()), fastConfig())
	it, err := ob.Enqueue(context.Background(), testMessage(1))
	if err != nil {
		t.Fatal(err)
	}
	got := waitState(t, ob, it.MessageID, StateSent, 20*time.Second)
	if got.Attempt != 3 {
		t.Errorf("delivered at attempt %d, want 3", got.Attempt)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "<"+it.MessageID+">") {
		t.Fatalf("server got %d messages, want 1 with Message-ID %s", len(msgs), it.MessageID)
	}
	if got.Result == nil || len(got.Result.Accepted) != 1 {
		t.Errorf("result %+v, want one accepted recipient", got.Result)
	}
}

func TestSQLiteEnqueueInCallersTransaction(t *testing.T) {
	srv := mailertest.NewServer()
	defer srv.Close()
	ob, db := startSQLite(t, newConn(t, srv.Addr()), fastConfig())
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	enqueue := func(i int, commit bool) *Item {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, i); err != nil {
			t.Fatal(err)
		}
		it, err := ob.EnqueueTx(ctx, tx, testMessage(i))
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		return it
	}
	rolledBack := enqueue(1, false)
	committed := enqueue(2, true)
	waitState(t, ob, committed.MessageID, StateSent, 10*time.Second)
	if _, err := ob.Get(ctx, rolledBack.MessageID); !errors.Is(err, ErrNotFound) {
		t.Errorf("rolled-back message: Get error %v, want ErrNotFound", err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("server got %d messages, want 1", n)
	}
}

func TestSQLiteDuplicateMessageID(t *testing.T) {
	srv := mailertest.NewServer()
	defer srv.Close()
	ob, _ := startSQLite(t, newConn(t, srv.Addr()), fastConfig())
	ctx := context.Background()
	msg := testMessage(1)
	msg.MessageID = "fixed.1@example.test"
	first, err := ob.Enqueue(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ob.Enqueue(ctx, msg)
	if !errors.Is(err, ErrDuplicate) || again == nil || again.ID != first.ID {
		t.Fatalf("second Enqueue: %+v, %v; want the first message and ErrDuplicate", again, err)
	}
	waitState(t, ob, msg.MessageID, StateSent, 10*time.Second)
	if _, err := ob.Enqueue(ctx, msg); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("Enqueue after delivery: %v, want ErrDuplicate", err)
	}
	raw := []byte("From: a@example.test\r\nTo: b@example.test\r\nMessage-ID: <raw.1@example.test>\r\nSubject: raw\r\n\r\nbody\r\n")
	env := mailer.Envelope{From: "a@example.test", To: []string{"b@example.test"}}
	if _, err := ob.EnqueueRaw(ctx, "", env, raw); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.EnqueueRaw(ctx, "", env, raw); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second EnqueueRaw: %v, want ErrDuplicate", err)
	}
	waitState(t, ob, "raw.1@example.test", StateSent, 10*time.Second)
	if n := len(srv.Messages()); n != 2 {
		t.Errorf("server got %d messages, want 2", n)
	}
}

func TestSQLitePermanentFailureAndPartialResults(t *testing.T) {
	srv := mailertest.NewServer(mailertest.WithRecipientReply("bad@example.test", 550, "5.1.1", "no such user"))
	defer srv.Close()
	ctx := context.Background()
	ob, _ := startSQLite(t, newConn(t, srv.Addr()), fastConfig())
	msg := testMessage(1)
	msg.To = append(msg.To, mailer.Recipient{Address: "bad@example.test"})
	it, err := ob.Enqueue(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	got := waitState(t, ob, it.MessageID, StateFailed, 10*time.Second)
	if got.Attempt != 1 || got.Result == nil || len(got.Result.Rejected) != 1 ||
		got.Result.Rejected[0].Code != 550 || got.Result.Rejected[0].EnhancedCode != "5.1.1" {
		t.Fatalf("failed message: %+v, result %+v; want one attempt and bad@ refused with 550 5.1.1", got, got.Result)
	}

	// With partial delivery the others get it, and the refusal is kept.
	ob2, _ := startSQLite(t, newConn(t, srv.Addr(), mailer.WithPartialDelivery()), fastConfig())
	it, err = ob2.Enqueue(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	got = waitState(t, ob2, it.MessageID, StateSent, 10*time.Second)
	if len(got.Result.Accepted) != 1 || len(got.Result.Rejected) != 1 || got.Result.Rejected[0].Address != "bad@example.test" {
		t.Fatalf("partial delivery result %+v, want one accepted and bad@ refused", got.Result)
	}
}

func TestSQLiteOutcomeUnknownResendDrop(t *testing.T) {
	// Connections 1 and 2 are lost after the final dot.
	srv := mailertest.NewServer(
		mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Drop, Conn: 1}),
		mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Drop, Conn: 2}))
	defer srv.Close()
	ctx := context.Background()
	cfg := fastConfig()
	cfg.Workers = 1
	ob, _ := startSQLite(t, newConn(t, srv.Addr()), cfg)
	a, err := ob.Enqueue(ctx, testMessage(1))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ob, a.MessageID, StateUnknown, 10*time.Second)
	b, err := ob.Enqueue(ctx, testMessage(2))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ob, b.MessageID, StateUnknown, 10*time.Second)
	unknown, err := ob.List(ctx, StateUnknown, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(unknown) != 2 || unknown[0].MessageID != a.MessageID || !strings.Contains(unknown[0].LastError, "confirmed") {
		t.Fatalf("unknown list %+v, want a and b with the library's error", unknown)
	}
	if err := ob.Resend(ctx, a.MessageID); err != nil {
		t.Fatal(err)
	}
	if err := ob.Drop(ctx, b.MessageID); err != nil {
		t.Fatal(err)
	}
	if err := ob.Drop(ctx, b.MessageID); !errors.Is(err, ErrState) {
		t.Errorf("second Drop: %v, want ErrState", err)
	}
	waitState(t, ob, a.MessageID, StateSent, 10*time.Second)
	counts, err := ob.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[State]int64{StateQueued: 0, StateSending: 0, StateSent: 1, StateFailed: 0, StateUnknown: 0, StateDropped: 1}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", counts, want)
	}
}

func TestSQLiteAtLeastOnce(t *testing.T) {
	srv := mailertest.NewServer(mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Drop, Conn: 1}))
	defer srv.Close()
	cfg := fastConfig()
	cfg.AtLeastOnce = true
	ob, _ := startSQLite(t, newConn(t, srv.Addr()), cfg)
	it, err := ob.Enqueue(context.Background(), testMessage(1))
	if err != nil {
		t.Fatal(err)
	}
	got := waitState(t, ob, it.MessageID, StateSent, 10*time.Second)
	if got.Attempt != 2 {
		t.Errorf("sent at attempt %d, want 2 (the first lost after the final dot, then resent)", got.Attempt)
	}
}

func TestSQLiteDeleteWhenSent(t *testing.T) {
	srv := mailertest.NewServer()
	defer srv.Close()
	cfg := fastConfig()
	cfg.KeepSent = -1
	ob, _ := startSQLite(t, newConn(t, srv.Addr()), cfg)
	ctx := context.Background()
	it, err := ob.Enqueue(ctx, testMessage(1))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := srv.WaitMessages(wctx, 1); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := ob.Get(ctx, it.MessageID)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("message still in the outbox after delivery: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Kept messages go once KeepSent has passed.
	kept, _ := startSQLite(t, newConn(t, srv.Addr()), fastConfig())
	if _, err := kept.Enqueue(ctx, testMessage(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.WaitMessages(wctx, 2); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := kept.cleanup(ctx, time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if wctx.Err() != nil {
			t.Fatal("the sent message was never cleaned up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

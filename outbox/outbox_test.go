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
	ctx := context.Background()
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if !cfg.InsertOnly {
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ob.Stop(ctx)
		})
	}
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

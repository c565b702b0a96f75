package outbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

func TestPostgresEnqueueInCallersTransaction(t *testing.T) {
	srv := mailertest.NewServer(
		mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply421, Conn: 1}))
	defer srv.Close()
	ob, pool, _ := startPostgres(t, newConn(t, srv.Addr()), fastConfig())
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE orders (id BIGINT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, commit := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		it, err := ob.EnqueueTx(ctx, tx, testMessage(i))
		if err != nil {
			t.Fatal(err)
		}
		// A duplicate leaves the transaction usable.
		if _, err := ob.EnqueueRawTx(ctx, tx, it.MessageID, it.Envelope, []byte("Subject: x\r\n\r\nx\r\n")); err == nil {
			t.Fatal("duplicate Message-ID enqueued")
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, it.MessageID)
	}
	got := waitState(t, ob, ids[1], StateSent, 20*time.Second)
	if got.Attempt != 2 {
		t.Errorf("delivered at attempt %d, want 2 (the first refused with 421)", got.Attempt)
	}
	if _, err := ob.Get(ctx, ids[0]); err != ErrNotFound {
		t.Errorf("rolled-back message: %v, want ErrNotFound", err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("server got %d messages, want 1", n)
	}
}

// TestPostgresScale has three worker processes drain a few thousand
// messages from one PostgreSQL: each is delivered exactly once, and every
// worker takes a share.
func TestPostgresScale(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	srv := mailertest.NewServer()
	defer srv.Close()
	ob, pool, url := startPostgres(t, nil, &Config{InsertOnly: true, Logger: quiet})
	ctx := context.Background()
	for i := 0; i < n; i += 500 {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for j := i; j < min(i+500, n); j++ {
			if _, err := ob.EnqueueTx(ctx, tx, testMessage(j)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var cmds []*exec.Cmd
	for w := range 3 {
		cmd := child("worker", "OUTBOX_PG_URL="+url, "OUTBOX_SMTP="+srv.Addr(), fmt.Sprintf("OUTBOX_WORKER=worker-%d", w))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	defer func() {
		for _, cmd := range cmds {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := srv.WaitMessages(wctx, n); err != nil {
		t.Fatalf("%d of %d messages delivered: %v", len(srv.Messages()), n, err)
	}
	elapsed := time.Since(start)
	deadline := time.Now().Add(20 * time.Second)
	for {
		counts, err := ob.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if counts[StateSent] == int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts %v, want %d sent", counts, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	perWorker := map[string]int{}
	perRcpt := map[string]int{}
	for _, m := range srv.Messages() {
		perWorker[m.Helo]++
		perRcpt[strings.Join(m.To, ",")]++
	}
	for i := range n {
		if c := perRcpt[fmt.Sprintf("rcpt%d@example.test", i)]; c != 1 {
			t.Errorf("message %d delivered %d times", i, c)
		}
	}
	if len(srv.Messages()) != n {
		t.Errorf("server got %d messages, want %d", len(srv.Messages()), n)
	}
	for w := range 3 {
		name := fmt.Sprintf("worker-%d", w)
		if perWorker[name] < n/20 {
			t.Errorf("%s delivered %d of %d: work not spread (%v)", name, perWorker[name], n, perWorker)
		}
	}
	fmt.Printf("scale: %d messages by 3 processes in %v (%.0f/s); per worker %v\n", n, elapsed.Round(time.Millisecond),
		float64(n)/elapsed.Seconds(), perWorker)
}

package outbox

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

// redirect dials whatever address it currently holds, so that a server
// restarted on another port is the same server to the Connection.
type redirect struct{ addr atomic.Value }

func (r *redirect) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, r.addr.Load().(string))
}

// TestSQLiteServerDown queues messages while the SMTP server is down: they
// fail temporarily, and once it is back every one is delivered, once.
func TestSQLiteServerDown(t *testing.T) {
	const n = 30
	first := mailertest.NewServer()
	target := &redirect{}
	target.addr.Store(first.Addr())
	first.Close()
	cfg := fastConfig()
	cfg.Backoff = func(int) time.Duration { return 100 * time.Millisecond }
	ob, _ := startSQLite(t, newConn(t, "mail.example.test:25", mailer.WithDialer(target),
		mailer.WithConnectTimeout(time.Second)), cfg)
	ctx := context.Background()
	var ids []string
	for i := range n {
		it, err := ob.Enqueue(ctx, testMessage(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, it.MessageID)
	}
	// Every message has failed at least once before the server returns.
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range ids {
		for {
			it, err := ob.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if it.State == StateQueued && it.LastError != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v, want queued after a failed attempt", id, it)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	second := mailertest.NewServer()
	defer second.Close()
	target.addr.Store(second.Addr())
	for _, id := range ids {
		waitState(t, ob, id, StateSent, 30*time.Second)
	}
	if got := len(second.Messages()); got != n {
		t.Errorf("server got %d messages, want %d", got, n)
	}
}

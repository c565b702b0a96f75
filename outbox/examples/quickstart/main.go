// Command quickstart queues one message in an SQLite outbox in a temporary
// directory and delivers it to an in-process test server that turns the
// first two attempts away (451, a temporary refusal), printing the
// message's states until it is delivered. It needs nothing installed:
//
//	cd outbox && go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
	"github.com/gomailer/mailer/outbox"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A test server that answers the first two messages' MAIL with 451.
	refuse := func(nth int) mailertest.Option {
		return mailertest.WithFault(mailertest.Fault{Command: "MAIL", Action: mailertest.Reply, Nth: nth,
			Code: 451, Enhanced: "4.3.0", Text: "Busy, try again later"})
	}
	srv := mailertest.NewServer(refuse(1), refuse(2))
	defer srv.Close()
	conn, err := mailer.NewConnection(srv.Addr(), mailer.WithSecurity(mailer.SecurityNone))
	if err != nil {
		return err
	}
	defer conn.Close()

	dir, err := os.MkdirTemp("", "outbox-quickstart")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := outbox.OpenSQLite(ctx, filepath.Join(dir, "outbox.db"))
	if err != nil {
		return err
	}
	defer db.Close()

	ob, err := outbox.NewSQLite(db, conn, &outbox.Config{
		Backoff:      func(int) time.Duration { return 500 * time.Millisecond },
		PollInterval: 100 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	if err := ob.Migrate(ctx); err != nil {
		return err
	}
	if err := ob.Start(ctx); err != nil {
		return err
	}
	defer ob.Stop(context.Background())

	// In a service this would be EnqueueTx, in the transaction that
	// records what the message is about.
	it, err := ob.Enqueue(ctx, &mailer.Message{
		From:    mailer.Recipient{Name: "Shop", Address: "shop@example.com"},
		To:      []mailer.Recipient{{Name: "Foo", Address: "foo@example.com"}},
		Subject: "Your order has shipped",
		Text:    "It is on its way.",
	})
	if err != nil {
		return err
	}
	fmt.Printf("queued %s\n", it.MessageID)

	last := ""
	for {
		it, err := ob.Get(ctx, it.MessageID)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%-8s attempt %d", it.State, it.Attempt)
		if it.State == outbox.StateQueued && it.LastError != "" {
			line += ": " + it.LastError
		}
		if line != last {
			fmt.Println(line)
			last = line
		}
		switch it.State {
		case outbox.StateSent:
			fmt.Printf("delivered; the server answered %q\n", it.Result.Response)
			return nil
		case outbox.StateFailed, outbox.StateUnknown:
			return fmt.Errorf("not delivered: %s", it.LastError)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

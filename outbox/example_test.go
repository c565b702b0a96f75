package outbox_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
	"github.com/gomailer/mailer/outbox"
)

// A message enqueued in the same SQLite transaction as the order it is
// about: it is delivered only if the transaction commits.
func ExampleOutbox_EnqueueTx() {
	ctx := context.Background()
	srv := mailertest.NewServer() // stands for the real SMTP server
	defer srv.Close()
	conn, err := mailer.NewConnection(srv.Addr(), mailer.WithSecurity(mailer.SecurityNone))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := outbox.OpenSQLite(ctx, filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ob, err := outbox.NewSQLite(db, conn, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if err := ob.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer ob.Stop(ctx)
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id INTEGER PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (42)`); err != nil {
		log.Fatal(err)
	}
	it, err := ob.EnqueueTx(ctx, tx, &mailer.Message{
		From:      mailer.Recipient{Address: "shop@example.com"},
		To:        []mailer.Recipient{{Address: "foo@example.com"}},
		MessageID: "order-42@example.com",
		Subject:   "Order 42 confirmed",
		Text:      "Thank you.",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}

	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got, err := ob.Get(ctx, it.MessageID)
		if err != nil {
			log.Fatal(err)
		}
		if got.State == outbox.StateSent {
			fmt.Println(got.MessageID, got.State, got.Result.Accepted)
			return
		}
	}
	fmt.Println("not delivered in time")
	// Output: order-42@example.com sent [foo@example.com]
}

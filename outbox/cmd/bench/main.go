// Command bench measures the outbox against sending directly: enqueue
// throughput inside a transaction, and end-to-end delivery throughput
// through the outbox against Connection.Send on the same in-process server,
// at 0 and 10 ms of round trip (bench/relay), 8 sessions. It prints one
// table with the ratios.
//
//	cd outbox && go run ./cmd/bench [-n 2000] [-pg URL]
//
// PostgreSQL rows need a database URL (-pg, else MAILER_TEST_POSTGRES_URL,
// which scripts/test-servers exports); the run uses a schema of its own and
// drops it at the end.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/bench/relay"
	"github.com/gomailer/mailer/mailertest"
	"github.com/gomailer/mailer/outbox"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const sessions = 8

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func main() {
	n := flag.Int("n", 2000, "messages per measurement")
	pgURL := flag.String("pg", os.Getenv("MAILER_TEST_POSTGRES_URL"), "PostgreSQL URL for the PostgreSQL rows (none: SQLite only)")
	flag.Parse()
	if err := run(*n, *pgURL); err != nil {
		log.Fatal(err)
	}
}

// store is one database under test: how to make a fresh outbox on it and
// how to enqueue one message in a transaction of the caller's.
type store struct {
	name    string
	open    func(conn *mailer.Connection, cfg *outbox.Config) (box, error)
	cleanup func()
}

// box is what the bench needs of an Outbox, whatever its transaction type.
type box interface {
	Migrate(ctx context.Context) error
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Counts(ctx context.Context) (map[outbox.State]int64, error)
	enqueueInTx(ctx context.Context, msg *mailer.Message) error
}

type sqliteBox struct {
	*outbox.Outbox[*sql.Tx]
	db *sql.DB
}

func (b sqliteBox) enqueueInTx(ctx context.Context, msg *mailer.Message) error {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := b.EnqueueTx(ctx, tx, msg); err != nil {
		return err
	}
	return tx.Commit()
}

type pgBox struct {
	*outbox.Outbox[pgx.Tx]
	pool *pgxpool.Pool
}

func (b pgBox) enqueueInTx(ctx context.Context, msg *mailer.Message) error {
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, err := b.EnqueueTx(ctx, tx, msg)
		return err
	})
}

func run(n int, pgURL string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fresh := 0
	stores := []store{{name: "SQLite", open: func(conn *mailer.Connection, cfg *outbox.Config) (box, error) {
		fresh++
		db, err := outbox.OpenSQLite(ctx, filepath.Join(dir, fmt.Sprintf("bench%d.db", fresh)))
		if err != nil {
			return nil, err
		}
		ob, err := outbox.NewSQLite(db, conn, cfg)
		return sqliteBox{ob, db}, err
	}}}
	if pgURL != "" {
		admin, err := pgxpool.New(ctx, pgURL)
		if err != nil {
			return err
		}
		defer admin.Close()
		var schemas []string
		stores = append(stores, store{name: "PostgreSQL", open: func(conn *mailer.Connection, cfg *outbox.Config) (box, error) {
			schema := fmt.Sprintf("outbox_bench_%d_%d", os.Getpid(), len(schemas))
			if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
				return nil, err
			}
			schemas = append(schemas, schema)
			pcfg, err := pgxpool.ParseConfig(pgURL)
			if err != nil {
				return nil, err
			}
			pcfg.ConnConfig.RuntimeParams["search_path"] = schema
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				return nil, err
			}
			ob, err := outbox.NewPostgres(pool, conn, cfg)
			return pgBox{ob, pool}, err
		}, cleanup: func() {
			for _, s := range schemas {
				admin.Exec(ctx, "DROP SCHEMA "+s+" CASCADE")
			}
		}})
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "measurement\tround trip\tdirect Send msg/s\toutbox msg/s\toutbox/direct\t\n")
	for _, st := range stores {
		if st.cleanup != nil {
			defer st.cleanup()
		}
		rate, err := enqueueRate(ctx, st, n)
		if err != nil {
			return fmt.Errorf("%s enqueue: %w", st.name, err)
		}
		fmt.Fprintf(tw, "%s enqueue, one transaction each\t-\t-\t%.0f\t-\t\n", st.name, rate)
	}
	for _, rtt := range []time.Duration{0, 10 * time.Millisecond} {
		srv := mailertest.NewServer()
		rl, err := relay.Start(srv.Addr(), rtt)
		if err != nil {
			return err
		}
		direct, err := directRate(ctx, rl.Addr(), n)
		if err != nil {
			return fmt.Errorf("direct at %v: %w", rtt, err)
		}
		for _, st := range stores {
			rate, err := deliveryRate(ctx, st, rl.Addr(), n)
			if err != nil {
				return fmt.Errorf("%s delivery at %v: %w", st.name, rtt, err)
			}
			fmt.Fprintf(tw, "%s end to end, %d sessions\t%v\t%.0f\t%.0f\t%.2f\t\n", st.name, sessions, rtt, direct, rate, rate/direct)
		}
		rl.Close()
		srv.Close()
	}
	return tw.Flush()
}

func message(i int) *mailer.Message {
	return &mailer.Message{
		From:    mailer.Recipient{Address: "bench@example.test"},
		To:      []mailer.Recipient{{Address: fmt.Sprintf("rcpt%d@example.test", i)}},
		Subject: fmt.Sprintf("bench message %d", i),
		Text:    "A short transactional message, the kind an outbox carries.\n",
	}
}

func newConn(addr string) (*mailer.Connection, error) {
	return mailer.NewConnection(addr, mailer.WithSecurity(mailer.SecurityNone), mailer.WithMaxConnections(sessions))
}

// enqueueRate enqueues n messages, each in a transaction of its own, from
// one goroutine, with no worker running.
func enqueueRate(ctx context.Context, st store, n int) (float64, error) {
	ob, err := st.open(nil, &outbox.Config{InsertOnly: true, Logger: quiet})
	if err != nil {
		return 0, err
	}
	if err := ob.Migrate(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := range n {
		if err := ob.enqueueInTx(ctx, message(i)); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// directRate sends n messages with Connection.Send from 8 goroutines.
func directRate(ctx context.Context, addr string, n int) (float64, error) {
	conn, err := newConn(addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	next := make(chan int)
	errs := make(chan error, sessions)
	var wg sync.WaitGroup
	start := time.Now()
	for range sessions {
		wg.Go(func() {
			for i := range next {
				if _, err := conn.Send(ctx, message(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// deliveryRate enqueues n messages, then times the workers (32, the
// default, sharing 8 sessions) from their start until the outbox counts n
// sent.
func deliveryRate(ctx context.Context, st store, addr string, n int) (float64, error) {
	conn, err := newConn(addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ob, err := st.open(conn, &outbox.Config{Logger: quiet, PollInterval: 10 * time.Millisecond})
	if err != nil {
		return 0, err
	}
	if err := ob.Migrate(ctx); err != nil {
		return 0, err
	}
	for i := range n {
		if err := ob.enqueueInTx(ctx, message(i)); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	if err := ob.Start(ctx); err != nil {
		return 0, err
	}
	defer ob.Stop(ctx)
	deadline := start.Add(5 * time.Minute)
	for {
		counts, err := ob.Counts(ctx)
		if err != nil {
			return 0, err
		}
		if counts[outbox.StateSent] == int64(n) {
			return float64(n) / time.Since(start).Seconds(), nil
		}
		if other := counts[outbox.StateFailed] + counts[outbox.StateUnknown]; other > 0 {
			return 0, fmt.Errorf("%d messages failed or unknown: %v", other, counts)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not delivered in 5 minutes: %v", counts)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

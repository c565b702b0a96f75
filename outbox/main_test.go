package outbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The crash and scale tests run workers in child processes: the test
// binary itself, told what to be by OUTBOX_TEST_CHILD.
func TestMain(m *testing.M) {
	switch os.Getenv("OUTBOX_TEST_CHILD") {
	case "crash":
		os.Exit(crashChild())
	case "worker":
		os.Exit(workerChild())
	}
	os.Exit(m.Run())
}

// child returns a command that runs this test binary as a child of kind,
// with env added to the environment.
func child(kind string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "OUTBOX_TEST_CHILD="+kind), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// workerChild delivers from the PostgreSQL outbox in OUTBOX_PG_URL to the
// server at OUTBOX_SMTP, saying EHLO with OUTBOX_WORKER as its name, until
// interrupted.
func workerChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	name := os.Getenv("OUTBOX_WORKER")
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "worker %s: %v\n", name, err)
		return 1
	}
	pool, err := pgxpool.New(ctx, os.Getenv("OUTBOX_PG_URL"))
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	conn, err := mailer.NewConnection(os.Getenv("OUTBOX_SMTP"), mailer.WithSecurity(mailer.SecurityNone),
		mailer.WithLocalName(name), mailer.WithMaxConnections(4), mailer.WithTimeout(10*time.Second))
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	cfg := fastConfig()
	cfg.ID = name
	cfg.Workers = 8
	ob, err := NewPostgres(pool, conn, cfg)
	if err != nil {
		return fail(err)
	}
	if err := ob.Start(ctx); err != nil {
		return fail(err)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ob.Stop(sctx); err != nil {
		return fail(err)
	}
	return 0
}

// pgSchema makes a schema of the test's own in the test cluster, dropped
// at the end, and returns a URL whose connections use it.
func pgSchema(t testing.TB) string {
	t.Helper()
	base := testenv.Postgres(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	schema := fmt.Sprintf("outbox_test_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool, err := pgxpool.New(context.Background(), base)
		if err != nil {
			t.Error(err)
			return
		}
		defer pool.Close()
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	return base + "&search_path=" + schema
}

// startPostgres returns a migrated Outbox on a schema of the test's own,
// started unless cfg.InsertOnly.
func startPostgres(t testing.TB, conn *mailer.Connection, cfg *Config) (*Outbox[pgx.Tx], *pgxpool.Pool, string) {
	t.Helper()
	url := pgSchema(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ob, err := NewPostgres(pool, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	migrateAndStart(t, ob, cfg)
	return ob, pool, url
}

// migrateAndStart migrates ob and, unless cfg.InsertOnly, starts its
// workers until the test ends.
func migrateAndStart[TTx any](t testing.TB, ob *Outbox[TTx], cfg *Config) {
	t.Helper()
	ctx := context.Background()
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if cfg.InsertOnly {
		return
	}
	if err := ob.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ob.Stop(ctx)
	})
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/internal/testenv"
	"github.com/gomailer/mailer/mailertest"
	"github.com/gomailer/mailer/outbox"
	"github.com/jackc/pgx/v5/pgxpool"
)

// noOutboxEnv clears the outbox variables a developer may have set, so
// that only what a test gives counts.
var noOutboxEnv = []string{envOutboxSQLite + "=", envOutboxPostgres + "="}

// outboxRun runs "mailer outbox" with args, the database given by env.
func outboxRun(t *testing.T, env []string, args ...string) outcome {
	t.Helper()
	return invocation{args: append([]string{"outbox"}, args...), env: append(noOutboxEnv[:len(noOutboxEnv):len(noOutboxEnv)], env...)}.run(t)
}

// outboxConfig is a worker configuration for the tests: one worker,
// retrying at once, polling often, silent.
func outboxConfig() *outbox.Config {
	return &outbox.Config{
		Workers:      1,
		Backoff:      func(int) time.Duration { return 10 * time.Millisecond },
		PollInterval: 50 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// startWorkers starts ob's workers, stopped when the test ends.
func startWorkers[TTx any](t *testing.T, ob *outbox.Outbox[TTx]) {
	t.Helper()
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ob.Stop(ctx); err != nil {
			t.Errorf("stopping the workers: %v", err)
		}
	})
}

// waitOutboxState polls until the message is in state, failing the test
// after ten seconds.
func waitOutboxState[TTx any](t *testing.T, ob *outbox.Outbox[TTx], messageID string, want outbox.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		it, err := ob.Get(context.Background(), messageID)
		if err != nil {
			t.Fatal(err)
		}
		if it.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s is %s after 10s, want %s (last error %q)", messageID, it.State, want, it.LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func outboxMessage(i int) *mailer.Message {
	return &mailer.Message{
		From:    mailer.Recipient{Address: "sender@example.test"},
		To:      []mailer.Recipient{{Address: fmt.Sprintf("rcpt%d@example.test", i)}},
		Subject: fmt.Sprintf("message %d", i),
		Text:    "hello\n",
	}
}

// lostAfterDotServer is a test server that drops its first two
// connections after the final dot: the first two messages sent through it
// become unknown.
func lostAfterDotServer(t *testing.T) *mailertest.Server {
	return plainServer(t,
		mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Drop, Conn: 1}),
		mailertest.WithFault(mailertest.Fault{Command: "DOT", Action: mailertest.Drop, Conn: 2}))
}

func newTestConnection(t *testing.T, addr string) *mailer.Connection {
	t.Helper()
	c, err := mailer.NewConnection(addr, mailer.WithSecurity(mailer.SecurityNone), mailer.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestOutboxSQLite migrates an SQLite outbox with the command, lets
// workers in the test make two messages unknown and deliver a third, and
// inspects and settles them with the command.
func TestOutboxSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	db := []string{envOutboxSQLite + "=" + path}

	// Only migrate creates the file.
	r := outboxRun(t, db, "counts")
	r.wantCode(t, exNoInput)
	if !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, "migrate") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("counts created the database: %v", err)
	}
	outboxRun(t, nil, "migrate", "--sqlite", path).wantCode(t, 0)
	outboxRun(t, nil, "migrate", "--sqlite", path).wantCode(t, 0) // again: nothing to do

	// The workers run in the test, on the schema the command made.
	sqlDB, err := outbox.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	srv := lostAfterDotServer(t)
	ob, err := outbox.NewSQLite(sqlDB, newTestConnection(t, srv.Addr()), outboxConfig())
	if err != nil {
		t.Fatal(err)
	}
	startWorkers(t, ob)
	testOutboxCommands(t, ob, srv, db)
}

// TestOutboxPostgres is TestOutboxSQLite on PostgreSQL, the database
// given in MAILER_OUTBOX_POSTGRES.
func TestOutboxPostgres(t *testing.T) {
	url := postgresSchema(t)
	db := []string{envOutboxPostgres + "=" + url}
	outboxRun(t, db, "migrate").wantCode(t, 0)
	outboxRun(t, db, "migrate").wantCode(t, 0)

	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	srv := lostAfterDotServer(t)
	ob, err := outbox.NewPostgres(pool, newTestConnection(t, srv.Addr()), outboxConfig())
	if err != nil {
		t.Fatal(err)
	}
	startWorkers(t, ob)
	testOutboxCommands(t, ob, srv, db)
}

// testOutboxCommands enqueues three messages in ob, whose workers deliver
// through srv (the first two lost after the final dot), and runs every
// outbox command on them with the database in env.
func testOutboxCommands[TTx any](t *testing.T, ob *outbox.Outbox[TTx], srv *mailertest.Server, env []string) {
	ctx := context.Background()
	var ids []string
	for i, want := range []outbox.State{outbox.StateUnknown, outbox.StateUnknown, outbox.StateSent} {
		it, err := ob.Enqueue(ctx, outboxMessage(i))
		if err != nil {
			t.Fatal(err)
		}
		waitOutboxState(t, ob, it.MessageID, want)
		ids = append(ids, it.MessageID)
	}
	a, b, c := ids[0], ids[1], ids[2]

	// counts, as text and JSON.
	r := outboxRun(t, env, "counts")
	r.wantCode(t, 0)
	got := map[string]string{}
	for line := range strings.Lines(r.stdout) {
		if f := strings.Fields(line); len(f) == 2 {
			got[f[0]] = f[1]
		}
	}
	if want := "map[dropped:0 failed:0 queued:0 sending:0 sent:1 unknown:2]"; fmt.Sprint(got) != want {
		t.Errorf("counts: %v, want %s\n%s", got, want, r.stdout)
	}
	wantCounts(t, env, map[outbox.State]int64{outbox.StateSent: 1, outbox.StateUnknown: 2})

	// list: the unknown ones by default, oldest first, with the error.
	r = outboxRun(t, env, "list")
	r.wantCode(t, 0)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "MESSAGE-ID") {
		t.Fatalf("list: want a header and two lines:\n%s", r.stdout)
	}
	for i, id := range []string{a, b} {
		f := strings.Fields(lines[i+1])
		if len(f) < 4 || f[0] != id || f[1] != "unknown" || f[2] != "1" || !strings.Contains(lines[i+1], "confirmed") {
			t.Errorf("list line %d: %q, want %s unknown at attempt 1 with the library's error", i+1, lines[i+1], id)
		}
	}
	if r.stderr != "" {
		t.Errorf("list of all the messages says more may follow: %s", r.stderr)
	}
	r = outboxRun(t, env, "list", "--limit", "1", "--json")
	r.wantCode(t, 0)
	items := jsonLines(t, r.stdout)
	if len(items) != 1 || items[0].MessageID != a || items[0].State != outbox.StateUnknown || items[0].Attempt != 1 ||
		items[0].LastError == "" || items[0].Envelope.From != "sender@example.test" ||
		strings.Join(items[0].Envelope.To, ",") != "rcpt0@example.test" || items[0].JobID == 0 || items[0].SentAt != nil {
		t.Fatalf("list --limit 1 --json: %+v", items)
	}
	// The next page, after the first's row ID; as text, the hint to it.
	r = outboxRun(t, env, "list", "--limit", "1", "--after", fmt.Sprint(items[0].ID), "--json")
	r.wantCode(t, 0)
	if next := jsonLines(t, r.stdout); len(next) != 1 || next[0].MessageID != b {
		t.Errorf("list --after %d: %+v, want %s", items[0].ID, next, b)
	}
	r = outboxRun(t, env, "list", "--limit", "1")
	r.wantCode(t, 0)
	if want := fmt.Sprintf("more may follow: add --after %d\n", items[0].ID); !strings.Contains(r.stdout, a) || !strings.HasSuffix(r.stderr, want) {
		t.Errorf("list --limit 1: stdout %q, stderr %q, want the hint %q", r.stdout, r.stderr, want)
	}
	r = outboxRun(t, env, "list", "--state", "sent", "--json")
	r.wantCode(t, 0)
	items = jsonLines(t, r.stdout)
	if len(items) != 1 || items[0].MessageID != c || items[0].Result == nil ||
		strings.Join(items[0].Result.Accepted, ",") != "rcpt2@example.test" || items[0].SentAt == nil {
		t.Errorf("list --state sent --json: %+v", items)
	}
	r = outboxRun(t, env, "list", "--state", "failed")
	r.wantCode(t, 0)
	if r.stdout != "" {
		t.Errorf("list of no message printed %q", r.stdout)
	}
	outboxRun(t, env, "list", "--state", "lost").wantCode(t, exUsage)

	// show, with the angle brackets of a header field.
	r = outboxRun(t, env, "show", "<"+a+">")
	r.wantCode(t, 0)
	rep := report(r.stdout)
	if rep["message-id"] != a || rep["state"] != "unknown" || rep["attempts"] != "1" || rep["from"] != "sender@example.test" ||
		rep["to"] != "rcpt0@example.test" || !strings.Contains(rep["last error"], "confirmed") || rep["sent"] != "" {
		t.Errorf("show of an unknown message:\n%s", r.stdout)
	}
	r = outboxRun(t, env, "show", c)
	r.wantCode(t, 0)
	rep = report(r.stdout)
	if rep["state"] != "sent" || rep["accepted"] != "rcpt2@example.test" || rep["sent"] == "" || rep["response"] == "" || rep["last error"] != "" {
		t.Errorf("show of a sent message:\n%s", r.stdout)
	}
	r = outboxRun(t, env, "show", c, "--json")
	r.wantCode(t, 0)
	var shown itemJSON
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatalf("show --json: %v\n%s", err, r.stdout)
	}
	if shown.MessageID != c || shown.State != outbox.StateSent || shown.Result == nil || shown.Result.Response != rep["response"] {
		t.Errorf("show --json: %+v", shown)
	}

	// Not found, wrong state: no change.
	for _, cmd := range []string{"show", "resend", "drop"} {
		r = outboxRun(t, env, cmd, "nobody@example.test")
		r.wantCode(t, exNoInput)
		if !strings.Contains(r.stderr, "no message nobody@example.test in the outbox") {
			t.Errorf("%s of a missing message: %s", cmd, r.stderr)
		}
	}
	for _, cmd := range []string{"resend", "drop"} {
		r = outboxRun(t, env, cmd, c)
		r.wantCode(t, exDataErr)
		if !strings.Contains(r.stderr, "is sent, not unknown") {
			t.Errorf("%s of a sent message: %s", cmd, r.stderr)
		}
	}

	// drop b, once; resend a, which the workers then deliver.
	outboxRun(t, env, "drop", b).wantCode(t, 0)
	outboxRun(t, env, "drop", b).wantCode(t, exDataErr)
	outboxRun(t, env, "resend", a).wantCode(t, 0)
	waitOutboxState(t, ob, a, outbox.StateSent)
	waitOutboxState(t, ob, b, outbox.StateDropped)
	wantCounts(t, env, map[outbox.State]int64{outbox.StateSent: 2, outbox.StateDropped: 1})
	delivered := 0
	for _, m := range srv.Messages() {
		if strings.Contains(header(m.Data, "Message-Id"), a) {
			delivered++
		}
	}
	if delivered == 0 {
		t.Errorf("the resent message %s did not reach the server", a)
	}
}

// report splits show's lines into key and value.
func report(s string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "  "); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// wantCounts checks counts --json against want, the states it lacks at
// zero.
func wantCounts(t *testing.T, env []string, want map[outbox.State]int64) {
	t.Helper()
	r := outboxRun(t, env, "counts", "--json")
	r.wantCode(t, 0)
	var got map[outbox.State]int64
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("counts --json: %v\n%s", err, r.stdout)
	}
	for _, s := range outbox.States {
		if n, ok := got[s]; !ok || n != want[s] {
			t.Errorf("counts --json: %s is %d (present: %v), want %d\n%s", s, n, ok, want[s], r.stdout)
		}
	}
}

func jsonLines(t *testing.T, s string) []itemJSON {
	t.Helper()
	var items []itemJSON
	for line := range strings.Lines(s) {
		var it itemJSON
		if err := json.Unmarshal([]byte(line), &it); err != nil {
			t.Fatalf("not a JSON line: %v\n%s", err, line)
		}
		items = append(items, it)
	}
	return items
}

// TestOutboxDatabaseChoice checks where the database comes from: a flag
// over the environment over the profile. Each names a missing file, which
// the error names.
func TestOutboxDatabaseChoice(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "profile.yaml")
	writeFile(t, profile, "SMTP:\n  SERVER: smtp.example.test\nOUTBOX:\n  SQLITE: "+filepath.Join(dir, "from-profile.db")+"\n", 0o600)
	env := []string{envOutboxSQLite + "=" + filepath.Join(dir, "from-env.db")}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag", env, []string{"--sqlite", filepath.Join(dir, "from-flag.db"), "--profile-outbox", profile}, "from-flag.db"},
		{"environment", env, []string{"--profile-outbox", profile}, "from-env.db"},
		{"profile", nil, []string{"--profile-outbox", profile}, "from-profile.db"},
	} {
		r := outboxRun(t, tc.env, append([]string{"counts"}, tc.args...)...)
		r.wantCode(t, exNoInput)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: stderr %q does not name %s", tc.name, r.stderr, tc.want)
		}
	}

	r := outboxRun(t, nil, "counts")
	r.wantCode(t, exUsage)
	if !strings.Contains(r.stderr, "--sqlite PATH or --postgres URL") {
		t.Errorf("no database: %s", r.stderr)
	}
	both := append(env[:1:1], envOutboxPostgres+"=postgres://127.0.0.1/x")
	outboxRun(t, both, "counts").wantCode(t, exUsage)
	outboxRun(t, nil, "counts", "--sqlite", "a.db", "--postgres", "postgres://127.0.0.1/x").wantCode(t, exUsage)

	noSection := filepath.Join(dir, "smtp.yaml")
	writeFile(t, noSection, "SMTP:\n  SERVER: smtp.example.test\n", 0o600)
	outboxRun(t, nil, "counts", "--profile-outbox", noSection).wantCode(t, exConfig)
	typo := filepath.Join(dir, "typo.yaml")
	writeFile(t, typo, "OUTBOX:\n  SQLLITE: x.db\n", 0o600)
	r = outboxRun(t, nil, "counts", "--profile-outbox", typo)
	r.wantCode(t, exConfig)
	if !strings.Contains(r.stderr, "SQLLITE") {
		t.Errorf("a misspelt key: %s", r.stderr)
	}

	outboxRun(t, nil, "nonsense").wantCode(t, exUsage)
	outboxRun(t, nil, "list", "--sqlite", "a.db", "--limit", "0").wantCode(t, exUsage)
}

// TestOutboxPostgresErrors needs no PostgreSQL: a URL that does not parse,
// nothing listening, a server that never answers. A password in the URL
// is never printed.
func TestOutboxPostgresErrors(t *testing.T) {
	pass := secret(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	r := outboxRun(t, nil, "counts", "--postgres", "postgres://app:"+pass+"@127.0.0.1:port/app")
	r.wantCode(t, exConfig)
	if !strings.Contains(r.stderr, "--postgres: not a PostgreSQL URL") {
		t.Errorf("an invalid URL: %s", r.stderr)
	}
	r = outboxRun(t, nil, "counts", "--postgres", "postgres://app:"+pass+"@"+refused+"/app?sslmode=disable")
	r.wantCode(t, exTempFail)
	if !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("nothing listening: %s", r.stderr)
	}
	start := time.Now()
	r = outboxRun(t, nil, "counts", "--timeout", "1", "--postgres", "postgres://app:"+pass+"@"+silent.Addr().String()+"/app?sslmode=disable")
	r.wantCode(t, exTempFail)
	if !strings.Contains(r.stderr, "--timeout") || time.Since(start) > 20*time.Second {
		t.Errorf("a server that never answers, after %v: %s", time.Since(start), r.stderr)
	}

	// A profile with a password, readable by others: a warning; not when
	// only its owner may read it.
	host, port, _ := net.SplitHostPort(refused)
	for i, conn := range []string{
		"postgres://app:" + pass + "@" + refused + "/app?sslmode=disable",
		"host=" + host + " port=" + port + " user=app password=" + pass + " sslmode=disable",
	} {
		for _, mode := range []os.FileMode{0o644, 0o600} {
			profile := filepath.Join(t.TempDir(), "outbox.yaml")
			writeFile(t, profile, fmt.Sprintf("OUTBOX:\n  POSTGRES: %q\n", conn), mode)
			r = outboxRun(t, nil, "counts", "--profile-outbox", profile)
			r.wantCode(t, exTempFail)
			if warned := strings.Contains(r.stderr, "warning: "+profile+" holds a password"); warned != (mode == 0o644) {
				t.Errorf("connection string %d in a profile of mode %04o: warned %v: %s", i, mode, warned, r.stderr)
			}
			for _, out := range []string{r.stderr, r.stdout} {
				if strings.Contains(out, pass) {
					t.Errorf("the password was printed: %s", out)
				}
			}
		}
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// postgresSchema returns the URL of a schema of the test's own in the
// cluster of MAILER_TEST_POSTGRES_URL (started by scripts/test-servers),
// dropped at the end; without the variable the test skips, and fails
// under CI=true.
func postgresSchema(t *testing.T) string {
	t.Helper()
	base := testenv.Postgres(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	schema := fmt.Sprintf("mailer_cli_test_%d_%d", os.Getpid(), time.Now().UnixNano())
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
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gomailer/mailer/outbox"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The environment variables that name the outbox's database when no flag
// does.
const (
	envOutboxSQLite   = "MAILER_OUTBOX_SQLITE"
	envOutboxPostgres = "MAILER_OUTBOX_POSTGRES"
)

// outboxStore is what the outbox commands use of an *outbox.Outbox,
// whichever its database.
type outboxStore interface {
	Migrate(ctx context.Context) error
	Counts(ctx context.Context) (map[outbox.State]int64, error)
	List(ctx context.Context, state outbox.State, after int64, limit int) ([]*outbox.Item, error)
	Get(ctx context.Context, messageID string) (*outbox.Item, error)
	Resend(ctx context.Context, messageID string) error
	Drop(ctx context.Context, messageID string) error
}

var (
	_ outboxStore = (*outbox.Outbox[*sql.Tx])(nil)
	_ outboxStore = (*outbox.Outbox[pgx.Tx])(nil)
)

// outboxFlags say which database holds the outbox; every outbox
// subcommand has them.
type outboxFlags struct {
	sqlite   string
	postgres string
	profile  string
	timeout  seconds
}

func addOutboxFlags(fs *pflag.FlagSet) *outboxFlags {
	f := &outboxFlags{timeout: seconds(30 * time.Second)}
	fs.StringVar(&f.sqlite, "sqlite", "", "the outbox's SQLite database file (env "+envOutboxSQLite+")")
	fs.StringVar(&f.postgres, "postgres", "", "the outbox's PostgreSQL URL, postgres://user@host:5432/db (env "+envOutboxPostgres+"; a password is better in PGPASSWORD or ~/.pgpass)")
	fs.StringVar(&f.profile, "profile-outbox", "", "YAML profile with an OUTBOX section (keys SQLITE, POSTGRES)")
	fs.Var(&f.timeout, "timeout", "how long to wait for the database, in seconds or as 1m30s")
	return f
}

// outboxDB is the outbox's database as the flags, the environment or the
// profile name it.
type outboxDB struct {
	sqlite   string // a file, or ""
	postgres string // a URL or connection string, or ""
	from     string // where the PostgreSQL URL came from, for errors
}

// database picks the outbox's database: the flags, else the environment,
// else the profile.
func (f *outboxFlags) database(stderr io.Writer) (*outboxDB, error) {
	type source struct {
		sqlite, postgres string
		both, from       string
	}
	sources := []source{
		{f.sqlite, f.postgres, "--sqlite and --postgres", "--postgres"},
		{os.Getenv(envOutboxSQLite), os.Getenv(envOutboxPostgres), envOutboxSQLite + " and " + envOutboxPostgres, envOutboxPostgres},
	}
	if f.profile != "" {
		p, err := loadOutboxProfile(f.profile, stderr)
		if err != nil {
			return nil, err
		}
		sources = append(sources, source{p.SQLite, p.Postgres, "SQLITE and POSTGRES in " + f.profile, "POSTGRES in " + f.profile})
	}
	for _, s := range sources {
		switch {
		case s.sqlite != "" && s.postgres != "":
			return nil, usageErrorf("%s name two databases: give one", s.both)
		case s.sqlite != "" || s.postgres != "":
			return &outboxDB{sqlite: s.sqlite, postgres: s.postgres, from: s.from}, nil
		}
	}
	return nil, usageErrorf("no outbox database: give --sqlite PATH or --postgres URL (or %s, %s, --profile-outbox)",
		envOutboxSQLite, envOutboxPostgres)
}

// open opens the outbox's database and an Outbox on it that runs no
// worker and needs no SMTP server. Only migrate may create an SQLite
// file; the others report a missing one. The returned function closes the
// database.
func (f *outboxFlags) open(ctx context.Context, stderr io.Writer, create bool) (outboxStore, func(), error) {
	d, err := f.database(stderr)
	if err != nil {
		return nil, nil, err
	}
	cfg := &outbox.Config{InsertOnly: true, Logger: slog.New(slog.DiscardHandler)}
	if d.postgres != "" {
		pcfg, err := pgxpool.ParseConfig(d.postgres)
		if err != nil {
			// pgx masks the passwords it recognises in a URL it cannot
			// parse, but not all of them: say nothing of the URL.
			return nil, nil, configErrorf("%s: not a PostgreSQL URL or connection string (postgres://user@host:5432/db)", d.from)
		}
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return nil, nil, outboxError(err)
		}
		ob, err := outbox.NewPostgres(pool, nil, cfg)
		if err != nil {
			pool.Close()
			return nil, nil, outboxError(err)
		}
		return ob, pool.Close, nil
	}
	if !create {
		if _, err := os.Stat(d.sqlite); err != nil {
			return nil, nil, inputErrorf("outbox database %s: %v (mailer outbox migrate creates it)", d.sqlite, unwrapPath(err))
		}
	}
	db, err := outbox.OpenSQLite(ctx, d.sqlite)
	if err != nil {
		if create {
			return nil, nil, &exitError{code: exIOErr, msg: oneLine(err)}
		}
		return nil, nil, inputErrorf("%s", oneLine(err))
	}
	ob, err := outbox.NewSQLite(db, nil, cfg)
	if err != nil {
		db.Close()
		return nil, nil, outboxError(err)
	}
	return ob, func() { db.Close() }, nil
}

// unwrapPath drops the operation and path of an *fs.PathError, which the
// message already names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// outboxProfile is the OUTBOX section of a profile.
type outboxProfile struct {
	SQLite   string `yaml:"SQLITE"`
	Postgres string `yaml:"POSTGRES"`
}

// loadOutboxProfile reads the OUTBOX section of the profile at path,
// warning on stderr when a PostgreSQL URL with a password is in a file
// open to other users.
func loadOutboxProfile(path string, stderr io.Writer) (*outboxProfile, error) {
	p, err := loadProfile(path)
	if err != nil {
		return nil, err
	}
	if p.Outbox == nil {
		return nil, configErrorf("profile %s has no OUTBOX section", path)
	}
	if hasPassword(p.Outbox.Postgres) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(stderr, "mailer: warning: %s holds a password in POSTGRES and is readable by others (mode %04o): chmod 600 it, or use PGPASSWORD or ~/.pgpass\n",
				path, fi.Mode().Perm())
		}
	}
	return p.Outbox, nil
}

// hasPassword reports whether a PostgreSQL URL (postgres://user:pass@...)
// or key=value connection string (password=...) holds a password.
func hasPassword(conn string) bool {
	if u, err := url.Parse(conn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return true
		}
	}
	return strings.Contains(strings.ToLower(conn), "password=")
}

// outboxError turns an error of the outbox or its database into one line
// with a sysexits.h code.
func outboxError(err error) *exitError {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee
	}
	// pgx puts each address it tried on a line of its own.
	msg := strings.Join(strings.Fields(flatten(err.Error())), " ")
	var pgErr *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.Is(err, outbox.ErrState):
		return &exitError{code: exDataErr, msg: msg}
	case errors.As(err, &pgErr) && pgErr.Code == "42P01", strings.Contains(msg, "no such table"):
		return &exitError{code: exConfig, msg: msg + "; run mailer outbox migrate first"}
	case errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28"):
		return &exitError{code: exNoPerm, msg: msg + "; check the user and password (PGPASSWORD, ~/.pgpass)"}
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{code: exTempFail, msg: msg + "; the database did not answer in time: try again, or give a longer --timeout"}
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &netErr):
		return &exitError{code: exTempFail, msg: msg}
	}
	return &exitError{code: exUnavailable, msg: msg}
}

// newOutboxCommand returns "mailer outbox" and its subcommands.
func newOutboxCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "Migrate and inspect an outbox; resend or drop messages of unknown outcome",
		Long: `Work on the database of a github.com/gomailer/mailer/outbox: run its migrations,
count and list its messages by state, show one, and settle a message whose
outcome is unknown (cut short after its final dot: it may have been delivered)
by queueing it again or dropping it. No SMTP server is needed and nothing is
delivered here: the service's own workers deliver.

The database is --sqlite PATH or --postgres URL, else MAILER_OUTBOX_SQLITE or
MAILER_OUTBOX_POSTGRES, else the OUTBOX section of --profile-outbox.`,
		Example: `  mailer outbox migrate --sqlite /var/lib/app/outbox.db
  mailer outbox counts --postgres postgres://app@db.example.com/app
  mailer outbox list --state unknown
  mailer outbox resend 3f2a9c@example.com`,
		// A RunE makes Cobra refuse an unknown subcommand (exit 64)
		// instead of printing the help.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	f := addOutboxFlags(cmd.PersistentFlags())
	cmd.AddCommand(
		outboxSubcommand(f, &cobra.Command{
			Use:   "migrate",
			Short: "Run River's and the outbox's migrations (safe to run again)",
			Args:  cobra.NoArgs,
		}, true, func(ctx context.Context, ob outboxStore, _ *cobra.Command, _ []string) error {
			return ob.Migrate(ctx)
		}),
		newOutboxCountsCommand(f),
		newOutboxListCommand(f),
		newOutboxShowCommand(f),
		outboxSubcommand(f, &cobra.Command{
			Use:   "resend MESSAGE-ID",
			Short: "Queue a message of unknown outcome again (it may then arrive twice)",
			Args:  cobra.ExactArgs(1),
		}, false, func(ctx context.Context, ob outboxStore, _ *cobra.Command, args []string) error {
			id := messageIDArg(args[0])
			return notFound(id, ob.Resend(ctx, id))
		}),
		outboxSubcommand(f, &cobra.Command{
			Use:   "drop MESSAGE-ID",
			Short: "Give up on a message of unknown outcome (state dropped)",
			Args:  cobra.ExactArgs(1),
		}, false, func(ctx context.Context, ob outboxStore, _ *cobra.Command, args []string) error {
			id := messageIDArg(args[0])
			return notFound(id, ob.Drop(ctx, id))
		}),
	)
	return cmd
}

// outboxSubcommand gives cmd a RunE that opens the outbox (create: an
// SQLite file may be created), runs do within --timeout or until
// interrupted, and turns its error into an exit code.
func outboxSubcommand(f *outboxFlags, cmd *cobra.Command, create bool,
	do func(ctx context.Context, ob outboxStore, cmd *cobra.Command, args []string) error) *cobra.Command {
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		ctx, cancel := context.WithTimeout(ctx, time.Duration(f.timeout))
		defer cancel()
		ob, closeDB, err := f.open(ctx, cmd.ErrOrStderr(), create)
		if err != nil {
			return err
		}
		defer closeDB()
		if err := do(ctx, ob, cmd, args); err != nil {
			return outboxError(err)
		}
		return nil
	}
	return cmd
}

// messageIDArg is a Message-ID as given, with the angle brackets of a
// header field taken off.
func messageIDArg(s string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "<"), ">")
}

// notFound names the Message-ID that the outbox does not have.
func notFound(messageID string, err error) error {
	if errors.Is(err, outbox.ErrNotFound) {
		return inputErrorf("no message %s in the outbox (mailer outbox list shows them)", messageID)
	}
	return err
}

func newOutboxCountsCommand(f *outboxFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "counts",
		Short: "Print how many messages are in each state",
		Args:  cobra.NoArgs,
	}
	asJSON := cmd.Flags().Bool("json", false, `print one JSON object, {"queued": 0, ...}`)
	return outboxSubcommand(f, cmd, false, func(ctx context.Context, ob outboxStore, cmd *cobra.Command, _ []string) error {
		counts, err := ob.Counts(ctx)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			return json.NewEncoder(out).Encode(counts)
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, s := range outbox.States {
			fmt.Fprintf(tw, "%s\t%d\n", s, counts[s])
		}
		return tw.Flush()
	})
}

func newOutboxListCommand(f *outboxFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [--state STATE] [--limit N] [--after ID]",
		Short: "List the messages in a state, oldest first",
		Long: `List the messages in a state (default unknown), oldest first, one a line:
Message-ID, state, attempts, last error. --json prints one JSON object a line,
with the row's "id" that --after takes for the next page.`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	state := fs.String("state", string(outbox.StateUnknown), "queued, sending, sent, failed, unknown or dropped")
	limit := fs.Int("limit", 100, "list at most N messages")
	after := fs.Int64("after", 0, "list the messages after the row ID (the \"id\" of --json), for the next page")
	asJSON := fs.Bool("json", false, "print one JSON object a message (JSON lines)")
	cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(stateNames(), cobra.ShellCompDirectiveNoFileComp))
	var st outbox.State
	cmd.PreRunE = func(*cobra.Command, []string) error {
		st = outbox.State(strings.ToLower(*state))
		if !slices.Contains(outbox.States, st) {
			return usageErrorf("--state %q: use one of %s", *state, strings.Join(stateNames(), ", "))
		}
		if *limit < 1 {
			return usageErrorf("--limit %d: give 1 or more", *limit)
		}
		return nil
	}
	return outboxSubcommand(f, cmd, false, func(ctx context.Context, ob outboxStore, cmd *cobra.Command, _ []string) error {
		items, err := ob.List(ctx, st, *after, *limit)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			enc := json.NewEncoder(out)
			for _, it := range items {
				if err := enc.Encode(newItemJSON(it)); err != nil {
					return err
				}
			}
			return nil
		}
		if len(items) == 0 {
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MESSAGE-ID\tSTATE\tATTEMPTS\tLAST ERROR")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", it.MessageID, it.State, it.Attempt, flatten(it.LastError))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(items) == *limit {
			fmt.Fprintf(cmd.ErrOrStderr(), "mailer: %d messages listed, more may follow: add --after %d\n", len(items), items[len(items)-1].ID)
		}
		return nil
	})
}

func stateNames() []string {
	names := make([]string, len(outbox.States))
	for i, s := range outbox.States {
		names[i] = string(s)
	}
	return names
}

func newOutboxShowCommand(f *outboxFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show MESSAGE-ID",
		Short: "Print one message: state, attempts, envelope, last error, per-recipient result",
		Args:  cobra.ExactArgs(1),
	}
	asJSON := cmd.Flags().Bool("json", false, "print it as one JSON object")
	return outboxSubcommand(f, cmd, false, func(ctx context.Context, ob outboxStore, cmd *cobra.Command, args []string) error {
		id := messageIDArg(args[0])
		it, err := ob.Get(ctx, id)
		if err != nil {
			return notFound(id, err)
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(newItemJSON(it))
		}
		printItem(out, it)
		return nil
	})
}

// itemJSON is an outbox.Item as list and show print it with --json.
type itemJSON struct {
	ID        int64          `json:"id"`
	MessageID string         `json:"message_id"`
	State     outbox.State   `json:"state"`
	Envelope  envelopeJSON   `json:"envelope"`
	JobID     int64          `json:"job_id"`
	Attempt   int            `json:"attempt"`
	LastError string         `json:"last_error,omitempty"`
	Result    *outbox.Result `json:"result,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
	SentAt    *time.Time     `json:"sent_at,omitempty"`
}

type envelopeJSON struct {
	From string   `json:"from"`
	To   []string `json:"to"`
}

func newItemJSON(it *outbox.Item) itemJSON {
	j := itemJSON{
		ID: it.ID, MessageID: it.MessageID, State: it.State,
		Envelope: envelopeJSON{From: it.Envelope.From, To: it.Envelope.To},
		JobID:    it.JobID, Attempt: it.Attempt, LastError: it.LastError, Result: it.Result,
		CreatedAt: it.CreatedAt.UTC(), UpdatedAt: it.UpdatedAt.UTC(),
	}
	if !it.SentAt.IsZero() {
		sent := it.SentAt.UTC()
		j.SentAt = &sent
	}
	return j
}

// printItem writes show's report of it.
func printItem(w io.Writer, it *outbox.Item) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	line("message-id", it.MessageID)
	line("state", string(it.State))
	line("attempts", fmt.Sprint(it.Attempt))
	line("from", it.Envelope.From)
	line("to", strings.Join(it.Envelope.To, ", "))
	line("queued", stamp(it.CreatedAt))
	line("updated", stamp(it.UpdatedAt))
	if !it.SentAt.IsZero() {
		line("sent", stamp(it.SentAt))
	}
	line("job", fmt.Sprint(it.JobID))
	if it.LastError != "" {
		line("last error", flatten(it.LastError))
	}
	if r := it.Result; r != nil {
		if len(r.Accepted) > 0 {
			line("accepted", strings.Join(r.Accepted, ", "))
		}
		for i, rej := range r.Rejected {
			k := ""
			if i == 0 {
				k = "rejected"
			}
			var reply []string
			if rej.Code != 0 {
				reply = append(reply, fmt.Sprint(rej.Code))
			}
			if rej.EnhancedCode != "" {
				reply = append(reply, rej.EnhancedCode)
			}
			line(k, rej.Address+": "+strings.Join(append(reply, flatten(rej.Message)), " "))
		}
		if r.Response != "" {
			line("response", flatten(r.Response))
		}
	}
	tw.Flush()
}

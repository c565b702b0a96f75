package outbox

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/gomailer/mailer"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

// OpenSQLite opens (creating it if needed) the SQLite database file at
// path the way River's SQLite driver needs it: one connection, WAL
// journal, a five-second busy timeout. It returns the open error, or the
// error of a first statement that fails.
func OpenSQLite(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("outbox: opening %s: %w", path, err)
	}
	return db, nil
}

// NewSQLite returns an Outbox on the SQLite database db, as OpenSQLite
// opens it, delivering through conn. It fails only on an invalid Config;
// call Migrate once, then Start.
func NewSQLite(db *sql.DB, conn *mailer.Connection, cfg *Config) (*Outbox[*sql.Tx], error) {
	return newOutbox(backend[*sql.Tx]{
		name:   "sqlite",
		driver: riversqlite.New(db),
		pool:   sqlQuerier{db},
		wrap:   func(tx *sql.Tx) querier { return sqlQuerier{tx} },
		begin: func(ctx context.Context) (*sql.Tx, error) {
			return db.BeginTx(ctx, nil)
		},
		commit:   func(_ context.Context, tx *sql.Tx) error { return tx.Commit() },
		rollback: func(_ context.Context, tx *sql.Tx) error { return tx.Rollback() },
		schema: [][]string{{
			`CREATE TABLE mailer_outbox (
	id INTEGER PRIMARY KEY,
	message_id TEXT NOT NULL UNIQUE,
	state TEXT NOT NULL,
	env_from TEXT NOT NULL,
	env_to TEXT NOT NULL,
	body BLOB NOT NULL,
	job_id INTEGER NOT NULL DEFAULT 0,
	attempt INTEGER NOT NULL DEFAULT 0,
	data_done INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	result TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	sent_at INTEGER NOT NULL DEFAULT 0
)`,
			`CREATE INDEX mailer_outbox_state ON mailer_outbox (state, id)`,
		}},
	}, conn, cfg)
}

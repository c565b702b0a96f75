package outbox

import (
	"context"

	"github.com/gomailer/mailer"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// NewPostgres returns an Outbox on the PostgreSQL pool, delivering through
// conn. Many processes, on many machines, may run an Outbox on the same
// database: each message is delivered by one of them. It fails only on an
// invalid Config; call Migrate once, then Start.
func NewPostgres(pool *pgxpool.Pool, conn *mailer.Connection, cfg *Config) (*Outbox[pgx.Tx], error) {
	return newOutbox(backend[pgx.Tx]{
		name:     "postgres",
		driver:   riverpgxv5.New(pool),
		pool:     pgxQuerier{pool},
		wrap:     func(tx pgx.Tx) querier { return pgxQuerier{tx} },
		begin:    func(ctx context.Context) (pgx.Tx, error) { return pool.Begin(ctx) },
		commit:   func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) },
		rollback: func(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) },
		lock:     `SELECT pg_advisory_xact_lock(7277001)`,
		schema: [][]string{{
			`CREATE TABLE mailer_outbox (
	id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	message_id TEXT NOT NULL UNIQUE,
	state TEXT NOT NULL,
	env_from TEXT NOT NULL,
	env_to TEXT NOT NULL,
	body BYTEA NOT NULL,
	job_id BIGINT NOT NULL DEFAULT 0,
	attempt BIGINT NOT NULL DEFAULT 0,
	data_done BIGINT NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	result TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	sent_at BIGINT NOT NULL DEFAULT 0
)`,
			`CREATE INDEX mailer_outbox_state ON mailer_outbox (state, id)`,
		}},
	}, conn, cfg)
}

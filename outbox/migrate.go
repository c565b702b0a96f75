package outbox

import (
	"context"
	"fmt"

	"github.com/riverqueue/river/rivermigrate"
)

// Migrate brings the database's schema up to date: River's tables through
// River's migrator, then the outbox's own table. It is safe to run at every
// start-up, and from several processes at once on PostgreSQL. It returns
// the first failing migration's error; what was applied before it stays.
func (o *Outbox[TTx]) Migrate(ctx context.Context) error {
	m, err := rivermigrate.New(o.b.driver, nil)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("outbox: River's migrations: %w", err)
	}
	return o.inTx(ctx, func(q querier, _ TTx) error {
		if o.b.lock != "" {
			if _, err := q.exec(ctx, o.b.lock); err != nil {
				return err
			}
		}
		if _, err := q.exec(ctx, `CREATE TABLE IF NOT EXISTS mailer_outbox_migration (version BIGINT NOT NULL)`); err != nil {
			return err
		}
		var have int
		if err := q.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM mailer_outbox_migration`).Scan(&have); err != nil {
			return err
		}
		for v := have + 1; v <= len(o.b.schema); v++ {
			for _, stmt := range o.b.schema[v-1] {
				if _, err := q.exec(ctx, stmt); err != nil {
					return fmt.Errorf("outbox: migration %d: %w", v, err)
				}
			}
			if _, err := q.exec(ctx, `INSERT INTO mailer_outbox_migration (version) VALUES (?)`, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// inTx runs f in a transaction of the Outbox's own, committed if f returns
// nil and rolled back otherwise.
func (o *Outbox[TTx]) inTx(ctx context.Context, f func(q querier, tx TTx) error) error {
	tx, err := o.b.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if err := f(o.b.wrap(tx), tx); err != nil {
		_ = o.b.rollback(ctx, tx)
		return err
	}
	if err := o.b.commit(ctx, tx); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// Package outbox sends mail durably: a message is written to the service's
// own database, in the same transaction as the business change if the
// caller wishes (the transactional outbox), and River workers deliver it
// through a *mailer.Connection, retrying temporary failures with back-off.
//
// SQLite (through modernc.org/sqlite, no C compiler) is the embedded
// default; PostgreSQL serves many processes on many machines sharing one
// queue. The queue is River's (github.com/riverqueue/river); the rendered
// message lives in a table of the outbox's own, mailer_outbox, with its
// state: queued, sending, sent, failed, unknown or dropped.
//
// A message is never sent twice silently: before its final dot a worker
// commits that the whole message is about to be sent, and a send found
// cut short after that point (a crash, a lost connection) is marked
// unknown for the operator (List, Resend, Drop) instead of being resent,
// unless Config.AtLeastOnce says otherwise. docs/outbox.md spells out the
// guarantees of each mode.
package outbox

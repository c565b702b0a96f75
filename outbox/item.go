package outbox

import (
	"errors"
	"time"

	"github.com/gomailer/mailer"
)

// State is where a message is in the outbox.
type State string

// The states of a message. Queued, sending and unknown wait for something
// (a worker, the server, the operator); sent, failed and dropped are final.
const (
	// StateQueued waits for a worker: new, or to be retried after a
	// temporary failure (Item.LastError says which).
	StateQueued State = "queued"
	// StateSending is being delivered; a crash leaves it here until River
	// rescues the job (Config.RescueAfter).
	StateSending State = "sending"
	// StateSent was accepted by the server for at least one recipient.
	StateSent State = "sent"
	// StateFailed was refused for good, or ran out of attempts.
	StateFailed State = "failed"
	// StateUnknown was sent up to its final dot without the server's
	// verdict reaching the outbox: it may have been delivered. It waits
	// for Resend or Drop.
	StateUnknown State = "unknown"
	// StateDropped was unknown and dropped by the operator.
	StateDropped State = "dropped"
)

// States lists every state, in the order of a message's life.
var States = []State{StateQueued, StateSending, StateSent, StateFailed, StateUnknown, StateDropped}

// ErrDuplicate is returned, with the message already there, when a message
// with the same Message-ID is enqueued again while the first is kept.
var ErrDuplicate = errors.New("outbox: a message with this Message-ID is already in the outbox")

// ErrNotFound means no message with that Message-ID is in the outbox.
var ErrNotFound = errors.New("outbox: no such message")

// ErrState means the message is not in a state the operation applies to,
// such as Resend of a message that is not unknown.
var ErrState = errors.New("outbox: message in the wrong state")

// Item is a message in the outbox, as Enqueue, Get and List report it.
type Item struct {
	ID        int64  // the outbox's own row ID
	MessageID string // the Message-ID, without angle brackets
	State     State
	Envelope  mailer.Envelope
	JobID     int64 // River's job ID
	Attempt   int   // the last attempt that started, counted from 1
	// LastError is the error of the last attempt, "" if none failed.
	LastError string
	// Result is what the server said of each recipient on the last
	// attempt that reached it; nil before that.
	Result    *Result
	CreatedAt time.Time
	UpdatedAt time.Time
	SentAt    time.Time // zero unless sent
}

// Result is the per-recipient outcome of a delivery attempt.
type Result struct {
	Accepted []string    `json:"accepted,omitempty"` // envelope recipients the server took
	Rejected []Rejection `json:"rejected,omitempty"` // recipients it refused, with its reply
	Response string      `json:"response,omitempty"` // its reply to the message, often a queue ID
}

// Rejection is one recipient the server refused.
type Rejection struct {
	Address      string `json:"address"`                 // as sent in RCPT TO
	Code         int    `json:"code,omitempty"`          // the reply code, 0 if it was no reply
	EnhancedCode string `json:"enhanced_code,omitempty"` // such as "5.1.1", "" if none
	Message      string `json:"message"`                 // the reply text, or the error
}

package outbox

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/gomailer/mailer"
)

func TestRetryable(t *testing.T) {
	reply := func(code int) *mailer.SMTPError { return &mailer.SMTPError{Code: code, Command: "RCPT"} }
	refused := func(codes ...int) *mailer.RecipientsError {
		e := &mailer.RecipientsError{}
		for i, c := range codes {
			e.Rejected = append(e.Rejected, mailer.RejectedRecipient{Address: fmt.Sprintf("r%d@example.test", i), Err: reply(c)})
		}
		return e
	}
	dbDown := errors.New("database is locked")
	for _, tc := range []struct {
		err, markErr error
		want         bool
	}{
		{reply(451), nil, true},
		{reply(550), nil, false},
		{refused(451, 452), nil, true},
		{refused(451, 550), nil, false},
		{fmt.Errorf("x: %w", mailer.ErrInvalidAddress), nil, false},
		{mailer.ErrOutcomeUnknown, nil, false},
		// The outbox's own reasons, which the library calls permanent.
		{fmt.Errorf("stopping: %w", context.Canceled), nil, true},
		{mailer.ErrClosed, nil, true},
		{fmt.Errorf("mailer: reading the message: %w", dbDown), dbDown, true},
	} {
		if got := retryable(tc.err, tc.markErr); got != tc.want {
			t.Errorf("retryable(%v, %v) = %v, want %v", tc.err, tc.markErr, got, tc.want)
		}
	}
}

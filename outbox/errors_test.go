package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/gomailer/mailer"
)

func TestIsTemporary(t *testing.T) {
	reply := func(code int) *mailer.SMTPError { return &mailer.SMTPError{Code: code, Command: "RCPT"} }
	refused := func(codes ...int) *mailer.RecipientsError {
		e := &mailer.RecipientsError{}
		for i, c := range codes {
			e.Rejected = append(e.Rejected, mailer.RejectedRecipient{Address: fmt.Sprintf("r%d@example.test", i), Err: reply(c)})
		}
		return e
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{reply(451), true},
		{reply(421), true},
		{reply(550), false},
		{fmt.Errorf("wrapped: %w", reply(452)), true},
		{refused(451, 452), true},
		{refused(451, 550), false},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{context.DeadlineExceeded, true},
		{mailer.ErrClosed, true},
		{fmt.Errorf("x: %w", mailer.ErrInvalidAddress), false},
		{mailer.ErrMessageTooLarge, false},
		{mailer.ErrOutcomeUnknown, false},
	} {
		if got := isTemporary(tc.err); got != tc.want {
			t.Errorf("isTemporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

package mailertest

import (
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/emersion/go-smtp"
)

// Action is what a Fault makes the server do.
type Action int

const (
	// Stall makes the server read nothing more and answer nothing, until
	// the client goes away or the server is closed.
	Stall Action = iota + 1
	// Drop closes the connection at once, without a reply.
	Drop
	// Reply421 answers "421 4.3.2 Service shutting down" and closes the
	// connection.
	Reply421
	// Reply answers the command with the Fault's Code, Enhanced and Text
	// instead of carrying it out, and goes on (a 421 closes the
	// connection after the reply). At "DOT" the message is read and
	// discarded, and the reply is the verdict on it. It does not apply to
	// "BDAT", "GREETING", "STARTTLS" or "AUTH".
	Reply
)

// Fault makes the server misbehave when a client sends a command.
type Fault struct {
	// Command is the verb that triggers the fault: "GREETING" (instead of
	// the banner), "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT",
	// "DATA" (the command itself), "BDAT" (each BDAT command, before its
	// chunk is read), "DOT" (after the whole message was read, before the
	// reply: the final dot, or the chunk of BDAT ... LAST), "RSET",
	// "NOOP", "VRFY" or "QUIT".
	Command string
	// Action is what happens.
	Action Action
	// Conn is the connection it applies to, counting from 1 in the order
	// they were accepted; 0 means every connection.
	Conn int
	// Nth is the occurrence of the command within the connection, counting
	// from 1; 0 means every occurrence.
	Nth int
	// Probability, when above 0, makes the fault apply to each matching
	// command only with that probability (0.1: one time in ten).
	Probability float64

	// Code, Enhanced ("4.7.1", may be empty) and Text make the reply of
	// the Reply action.
	Code     int
	Enhanced string
	Text     string
}

// replyLine returns the reply line of a Reply fault.
func (f Fault) replyLine() string {
	line := strconv.Itoa(f.Code)
	if f.Enhanced != "" {
		line += " " + f.Enhanced
	}
	if f.Text != "" {
		line += " " + f.Text
	}
	return line + "\r\n"
}

// smtpError returns the reply of a Reply fault as go-smtp's error.
func (f Fault) smtpError() *smtp.SMTPError {
	e := &smtp.SMTPError{Code: f.Code, Message: f.Text}
	var a, b, d int
	if _, err := fmt.Sscanf(f.Enhanced, "%d.%d.%d", &a, &b, &d); err == nil {
		e.EnhancedCode = smtp.EnhancedCode{a, b, d}
	} else {
		e.EnhancedCode = smtp.NoEnhancedCode
	}
	return e
}

// match returns the fault for the nth occurrence of cmd on connection
// conn, if any.
func (c *config) match(cmd string, conn, nth int) (Fault, bool) {
	for _, f := range c.faults {
		if f.Command == cmd && (f.Conn == 0 || f.Conn == conn) && (f.Nth == 0 || f.Nth == nth) &&
			(f.Probability <= 0 || rand.Float64() < f.Probability) {
			return f, true
		}
	}
	return Fault{}, false
}

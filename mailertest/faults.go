package mailertest

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
}

// match returns the fault for the nth occurrence of cmd on connection
// conn, if any.
func (c *config) match(cmd string, conn, nth int) (Fault, bool) {
	for _, f := range c.faults {
		if f.Command == cmd && (f.Conn == 0 || f.Conn == conn) && (f.Nth == 0 || f.Nth == nth) {
			return f, true
		}
	}
	return Fault{}, false
}

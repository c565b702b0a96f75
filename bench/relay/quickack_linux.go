package relay

import (
	"net"
	"syscall"
)

// quickAck asks Linux to acknowledge what was just read from conn at once.
// The relay stands in for the client's end of the server's connection: with
// the kernel's delayed ACK there, a server that writes a pipelined group's
// replies in two segments (its Nagle algorithm holding the second until the
// first is acknowledged) stalls 40 ms that no client on a real network
// would see from a relay, only from its own kernel (mailer quick-acks its
// own reads the same way).
func quickAck(conn net.Conn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	if rc, err := tc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
}

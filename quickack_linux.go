package mailer

import (
	"net"
	"syscall"
)

// quickAcker returns a function that asks Linux to acknowledge what was
// read at once (TCP_QUICKACK, which the kernel clears again by itself), or
// nil when conn is not a TCP socket. A pipelining client often has nothing
// to send while it reads a reply in several segments; a delayed ACK there
// meets the server's Nagle algorithm and stalls the reply for 40 ms.
func quickAcker(conn net.Conn) func() {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	set := func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1) }
	return func() { _ = rc.Control(set) }
}

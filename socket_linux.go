package mailer

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// quickAcker returns a function that asks Linux to acknowledge what was
// read at once (TCP_QUICKACK, which the kernel clears again by itself), or
// nil when conn is not a TCP socket. A pipelining client often has nothing
// to send while it reads a reply in several segments; a delayed ACK there
// meets the server's Nagle algorithm and stalls the reply for 40 ms.
func quickAcker(conn net.Conn) func() {
	rc := rawConn(conn)
	if rc == nil {
		return nil
	}
	set := func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1) }
	return func() { _ = rc.Control(set) }
}

// socketPeeker returns a function that reports, without waiting and
// without taking anything, whether the server has sent something or
// closed the connection (recv with MSG_PEEK and MSG_DONTWAIT), or nil when
// conn is not a TCP socket. Under TLS, what arrived may be a record the
// application never sees (a session ticket); the caller looks closer.
func socketPeeker(conn net.Conn) func() (bool, error) {
	rc := rawConn(conn)
	if rc == nil {
		return nil
	}
	return func() (bool, error) {
		var buf [1]byte
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		}); err != nil {
			return true, err
		}
		switch {
		case errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK):
			return false, nil
		case rerr != nil:
			return true, rerr
		case n == 0:
			return true, io.EOF
		}
		return true, nil
	}
}

// rawConn returns conn's socket for system calls, nil if conn is not TCP.
func rawConn(conn net.Conn) syscall.RawConn {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

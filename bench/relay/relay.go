// Package relay is a TCP relay on loopback that delays every chunk by half
// a chosen round trip in each direction (order preserved), and counts the
// command/reply turns it sees, so that SMTP clients can be compared at
// real-world latencies.
package relay

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay forwards connections from Addr to a target.
type Relay struct {
	ln     net.Listener
	target string
	delay  time.Duration // one way
	turns  atomic.Int64
	wg     sync.WaitGroup
}

// Start listens on 127.0.0.1 and relays every connection to target with
// rtt of added round-trip time.
func Start(target string, rtt time.Duration) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{ln: ln, target: target, delay: rtt / 2}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is where clients connect.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Turns returns the number of round trips seen so far: each time a client
// sends after the server has spoken counts one.
func (r *Relay) Turns() int64 { return r.turns.Load() }

// Close stops accepting and waits for the open connections to end.
func (r *Relay) Close() error {
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		var serverSpoke atomic.Bool
		r.wg.Add(2)
		go r.pipe(c, s, func() {
			if serverSpoke.Swap(false) {
				r.turns.Add(1)
			}
		})
		go r.pipe(s, c, func() { serverSpoke.Store(true) })
	}
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies from src to dst, each chunk delayed by r.delay; seen is
// called for each chunk read.
func (r *Relay) pipe(src, dst net.Conn, seen func()) {
	defer r.wg.Done()
	queue := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range queue {
			if d := time.Until(ch.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(ch.data); err != nil {
				break
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		quickAck(src)
		if n > 0 {
			seen()
			queue <- chunk{due: time.Now().Add(r.delay), data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			break
		}
	}
	close(queue)
	<-done
	src.Close()
	dst.Close()
}

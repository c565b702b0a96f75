package mailer

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// transport is the net.Conn a session hands to go-smtp. It owns the socket
// (and the TLS layer once there is one), and it is where the caller's
// context meets the connection: go-smtp sets and clears deadlines around
// every command, and transport caps each of them at the context's deadline
// and turns a cancellation into an immediate deadline, so a blocked read or
// write returns at once. It also feeds the transcript, replays bytes the
// session has already read, and remembers whether a write failed.
type transport struct {
	mu        sync.Mutex
	conn      net.Conn  // the socket, or TLS over it
	limit     time.Time // the bound context's deadline; zero if none
	cancelled bool      // the bound context is done
	deadline  time.Time // the deadline last asked for, before capping
	writeErr  error     // the first write error since resetWriteErr
	// ioTimeout bounds each Write, since go-smtp sets no deadline while
	// message data is written.
	ioTimeout time.Duration

	replay  []byte // served by Read before the connection's own bytes
	capture []byte // bytes read while capturing is on
	capOn   bool
	tr      *transcript
}

func newTransport(conn net.Conn, tr *transcript, ioTimeout time.Duration) *transport {
	return &transport{conn: conn, tr: tr, ioTimeout: ioTimeout}
}

// bind ties the transport to ctx until the returned function is called:
// deadlines are capped at ctx's and cancelling ctx interrupts any blocked
// I/O.
func (t *transport) bind(ctx context.Context) (unbind func()) {
	t.mu.Lock()
	t.limit, _ = ctx.Deadline()
	t.cancelled = false
	t.applyLocked()
	t.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cancelled = true
		t.applyLocked()
		t.mu.Unlock()
	})
	return func() {
		stop()
		t.mu.Lock()
		t.limit, t.cancelled = time.Time{}, false
		t.applyLocked()
		t.mu.Unlock()
	}
}

// effectiveLocked returns the deadline d capped by the bound context.
func (t *transport) effectiveLocked(d time.Time) time.Time {
	if t.cancelled {
		return time.Unix(1, 0)
	}
	if !t.limit.IsZero() && (d.IsZero() || d.After(t.limit)) {
		return t.limit
	}
	return d
}

func (t *transport) applyLocked() {
	_ = t.conn.SetDeadline(t.effectiveLocked(t.deadline))
}

func (t *transport) Read(p []byte) (int, error) {
	t.mu.Lock()
	if len(t.replay) > 0 {
		n := copy(p, t.replay)
		t.replay = t.replay[n:]
		t.mu.Unlock()
		return n, nil
	}
	conn := t.conn
	t.mu.Unlock()
	n, err := conn.Read(p)
	if n > 0 {
		if t.tr != nil {
			t.tr.server(p[:n])
		}
		t.mu.Lock()
		if t.capOn {
			t.capture = append(t.capture, p[:n]...)
		}
		t.mu.Unlock()
	}
	return n, err
}

// startCapture records the bytes read from the wire until stopCapture,
// which returns them. The session uses it to see the whole EHLO reply,
// which go-smtp parses but does not expose.
func (t *transport) startCapture() {
	t.mu.Lock()
	t.capOn, t.capture = true, nil
	t.mu.Unlock()
}

func (t *transport) stopCapture() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.capture
	t.capOn, t.capture = false, nil
	return b
}

func (t *transport) Write(p []byte) (int, error) {
	t.mu.Lock()
	conn := t.conn
	if t.ioTimeout > 0 {
		_ = conn.SetWriteDeadline(t.effectiveLocked(time.Now().Add(t.ioTimeout)))
	}
	t.mu.Unlock()
	n, err := conn.Write(p)
	if n > 0 && t.tr != nil {
		t.tr.client(p[:n])
	}
	if err != nil {
		t.mu.Lock()
		if t.writeErr == nil {
			t.writeErr = err
		}
		t.mu.Unlock()
	}
	return n, err
}

// resetWriteErr forgets earlier write errors; lastWriteErr reports the
// first one since.
func (t *transport) resetWriteErr() {
	t.mu.Lock()
	t.writeErr = nil
	t.mu.Unlock()
}

func (t *transport) lastWriteErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.writeErr
}

// setReplay makes the next reads return b before anything from the wire.
func (t *transport) setReplay(b []byte) {
	t.mu.Lock()
	t.replay = append([]byte(nil), b...)
	t.mu.Unlock()
}

// startTLS replaces the socket with a TLS client over it and runs the
// handshake now, so that a bad certificate fails here and not at the first
// command.
func (t *transport) startTLS(ctx context.Context, cfg *tls.Config) (*tls.Conn, error) {
	t.mu.Lock()
	tc := tls.Client(t.conn, cfg)
	t.conn = tc
	t.mu.Unlock()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	if t.tr != nil {
		t.tr.reset()
	}
	return tc, nil
}

// tlsState returns the TLS state, if the connection is encrypted.
func (t *transport) tlsState() (tls.ConnectionState, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tc, ok := t.conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

func (t *transport) Close() error {
	t.mu.Lock()
	conn := t.conn
	t.mu.Unlock()
	return conn.Close()
}

func (t *transport) LocalAddr() net.Addr  { return t.conn.LocalAddr() }
func (t *transport) RemoteAddr() net.Addr { return t.conn.RemoteAddr() }

func (t *transport) SetDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deadline = d
	return t.conn.SetDeadline(t.effectiveLocked(d))
}

func (t *transport) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn.SetReadDeadline(t.effectiveLocked(d))
}

func (t *transport) SetWriteDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn.SetWriteDeadline(t.effectiveLocked(d))
}

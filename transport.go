package mailer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Caps on what is read from a server. RFC 5321 4.5.3.1.5 limits a reply
// line to 512 octets; the caps are generous but finite, so that a hostile
// or broken server cannot make the client hold more than maxReplyBytes of
// one reply. go-smtp limits lines to 2,000 octets and nothing else, so the
// transport enforces the rest beneath it, and the same line length for
// what it reads itself.
const (
	maxReplyLine  = 2000     // octets in one reply line, CRLF included
	maxReplyLines = 1000     // lines in one reply
	maxReplyBytes = 64 << 10 // octets in one reply
)

// defaultMinDataRate is the slowest average rate, in bytes per second, at
// which message data may be written once the command timeout's grace is
// over (see WithMinDataRate).
const defaultMinDataRate = 16 << 10

// transport is the net.Conn a session hands to go-smtp. It owns the socket
// (and the TLS layer once there is one), and it is where the caller's
// context meets the connection: go-smtp sets and clears deadlines around
// every command, and transport caps each of them at the context's deadline
// and turns a cancellation into an immediate deadline, so a blocked read or
// write returns at once.
//
// Reads are framed by line: Read returns at most the rest of one complete
// line, so go-smtp's buffer never holds bytes beyond the reply it is
// reading, a line cut short by a timeout is an error rather than a reply,
// and the caps above apply to every reply whoever reads it. It also feeds
// the transcript, replays bytes the session has already read, and
// remembers whether a write failed.
type transport struct {
	mu       sync.Mutex
	conn     net.Conn          // the socket, or TLS over it
	bound    []context.Context // the contexts bound, outermost first
	deadline time.Time         // the deadline last asked for, before capping
	writeErr error             // the first write error since resetWriteErr
	// ioTimeout bounds each Write, since go-smtp sets no deadline while
	// message data is written.
	ioTimeout time.Duration
	// minRate and the data* fields bound a whole message's transfer:
	// see startData.
	minRate     int64
	dataStart   time.Time
	dataWritten int64
	inData      bool

	// Read side, used by one goroutine at a time.
	br         *bufio.Reader // line reader over the current conn
	pending    []byte        // the rest of a line go-smtp has not read
	replay     []byte        // served by Read before the connection's own bytes
	replyLines int           // lines of the reply being read
	replyBytes int           // and its bytes
	multiCode  string        // the code of a multi-line reply being read
	capture    []byte        // lines read while capturing is on
	capOn      bool
	nread      int64                // bytes read from the connection
	quickAck   func()               // after each read, when on (see ackAtOnce)
	acker      func()               // TCP_QUICKACK on the socket beneath TLS, nil if none
	peeker     func() (bool, error) // has the server spoken (socket beneath TLS)? nil if unknown

	tr *transcript
}

func newTransport(conn net.Conn, tr *transcript, ioTimeout time.Duration, minRate int64) *transport {
	t := &transport{conn: conn, tr: tr, ioTimeout: ioTimeout, minRate: minRate, acker: quickAcker(conn), peeker: socketPeeker(conn)}
	t.br = bufio.NewReaderSize(connReader{t}, maxReplyLine)
	return t
}

// connReader reads from the transport's current connection.
type connReader struct{ t *transport }

func (r connReader) Read(p []byte) (int, error) {
	r.t.mu.Lock()
	conn := r.t.conn
	r.t.mu.Unlock()
	n, err := conn.Read(p)
	r.t.nread += int64(n)
	if n > 0 && r.t.quickAck != nil {
		r.t.quickAck()
	}
	return n, err
}

// ackAtOnce turns on acknowledging every read at once, for a session that
// pipelines: its replies come in groups a server may write in several
// segments while the client has nothing to send. Without pipelining each
// reply answers a command just sent, and the system call is saved.
func (t *transport) ackAtOnce(on bool) {
	t.quickAck = nil
	if on {
		t.quickAck = t.acker
	}
}

// bytesRead returns how many bytes were read from the connection.
func (t *transport) bytesRead() int64 { return t.nread }

// bind ties the transport to ctx until the returned function is called:
// deadlines are capped at ctx's and cancelling ctx interrupts any blocked
// I/O. Binds nest: an inner bind (QUIT's own short context, say) never
// lifts an outer context's end.
func (t *transport) bind(ctx context.Context) (unbind func()) {
	t.mu.Lock()
	t.bound = append(t.bound, ctx)
	t.applyLocked()
	t.mu.Unlock()
	stop := context.AfterFunc(ctx, t.reapply)
	return func() {
		stop()
		t.mu.Lock()
		if i := slices.Index(t.bound, ctx); i >= 0 {
			t.bound = slices.Delete(t.bound, i, i+1)
		}
		t.applyLocked()
		t.mu.Unlock()
	}
}

// reapply sets the connection's deadline again, when a bound context
// ends: every blocked and future read and write then fails at once.
func (t *transport) reapply() {
	t.mu.Lock()
	t.applyLocked()
	t.mu.Unlock()
}

// effectiveLocked returns the deadline d capped by the bound contexts, or
// a past one if any of them is done.
func (t *transport) effectiveLocked(d time.Time) time.Time {
	for _, ctx := range t.bound {
		if ctx.Err() != nil {
			return time.Unix(1, 0)
		}
		if dl, ok := ctx.Deadline(); ok && (d.IsZero() || d.After(dl)) {
			d = dl
		}
	}
	return d
}

func (t *transport) applyLocked() {
	_ = t.conn.SetDeadline(t.effectiveLocked(t.deadline))
}

// Read serves go-smtp: replayed bytes first, then the connection's bytes a
// line at a time.
func (t *transport) Read(p []byte) (int, error) {
	if len(t.replay) > 0 {
		n := copy(p, t.replay)
		t.replay = t.replay[n:]
		return n, nil
	}
	if len(t.pending) == 0 {
		line, err := t.readLine()
		if err != nil {
			return 0, err
		}
		t.pending = line
	}
	n := copy(p, t.pending)
	t.pending = t.pending[n:]
	return n, nil
}

// readLine returns the next complete reply line, CRLF included, enforcing
// the caps. The slice is valid until the next read. A line cut short by an
// error is dropped: the error is returned alone.
func (t *transport) readLine() ([]byte, error) {
	line, err := t.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("%w: a line longer than %d bytes", ErrReplyTooLarge, maxReplyLine)
	case errors.Is(err, io.EOF) && len(line) > 0:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	t.replyLines++
	t.replyBytes += len(line)
	switch {
	case t.replyLines > maxReplyLines:
		return nil, fmt.Errorf("%w: more than %d lines", ErrReplyTooLarge, maxReplyLines)
	case t.replyBytes > maxReplyBytes:
		return nil, fmt.Errorf("%w: more than %d bytes", ErrReplyTooLarge, maxReplyBytes)
	}
	// Where a reply ends is decided as net/textproto (and so go-smtp)
	// decides it: a line without '-' after the code ends a one-line reply;
	// a multi-line reply ends only at a line with its code and a space,
	// whatever malformed lines come before.
	switch {
	case t.multiCode == "" && len(line) >= 4 && line[3] == '-':
		t.multiCode = string(line[:3])
	case t.multiCode == "",
		len(line) >= 4 && line[3] == ' ' && string(line[:3]) == t.multiCode:
		t.replyLines, t.replyBytes, t.multiCode = 0, 0, ""
	}
	if t.tr != nil {
		t.tr.server(line)
	}
	if t.capOn {
		t.capture = append(t.capture, line...)
	}
	return line, nil
}

// readReply reads one reply (RFC 5321 4.2) with the caps: its code and its
// text, lines joined by "\n". A line that is not a reply line is an error.
func (t *transport) readReply() (int, string, error) {
	code := 0
	var text []string
	for {
		b, err := t.readLine()
		if err != nil {
			return 0, "", err
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		c, err := strconv.Atoi(line[:min(3, len(line))])
		if len(line) < 3 || err != nil || c < 100 || c > 599 || (code != 0 && c != code) ||
			(len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return 0, "", fmt.Errorf("mailer: malformed reply %q", clip(line))
		}
		code = c
		if len(line) > 4 {
			text = append(text, line[4:])
		} else {
			text = append(text, "")
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(text, "\n"), nil
		}
	}
}

// secret tells the transcript whether what the client writes now is a
// credential, to be redacted.
func (t *transport) secret(on bool) {
	if t.tr != nil {
		t.tr.setSecret(on)
	}
}

// peekByte returns the first byte the server sends, without consuming it.
func (t *transport) peekByte() (byte, error) {
	b, err := t.br.Peek(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// quiet reports, without waiting, that the server has sent nothing and not
// closed the connection since the last reply was read; false means it may
// have (or that the socket cannot tell).
func (t *transport) quiet() bool {
	if t.br.Buffered() > 0 || t.peeker == nil {
		return false
	}
	spoke, err := t.peeker()
	return !spoke && err == nil
}

// startCapture records the lines read from the wire until stopCapture,
// which returns them. The session uses it to see the whole EHLO reply,
// which go-smtp parses but does not expose; the reply caps bound it.
func (t *transport) startCapture() {
	t.capOn, t.capture = true, nil
}

func (t *transport) stopCapture() []byte {
	b := t.capture
	t.capOn, t.capture = false, nil
	return b
}

// setReplay makes the next reads return b before anything from the wire.
func (t *transport) setReplay(b []byte) {
	t.replay = b
}

func (t *transport) Write(p []byte) (int, error) {
	t.mu.Lock()
	conn := t.conn
	if t.ioTimeout > 0 {
		d := time.Now().Add(t.ioTimeout)
		if t.inData && t.minRate > 0 {
			// The whole message so far must have gone at minRate, after
			// a grace of one timeout.
			rated := t.dataStart.Add(t.ioTimeout + time.Duration(float64(t.dataWritten+int64(len(p)))/float64(t.minRate)*float64(time.Second)))
			if rated.Before(d) {
				d = rated
			}
		}
		_ = conn.SetWriteDeadline(t.effectiveLocked(d))
	}
	t.mu.Unlock()
	n, err := conn.Write(p)
	if n > 0 && t.tr != nil {
		t.tr.client(p[:n])
	}
	t.mu.Lock()
	t.dataWritten += int64(n)
	if err != nil && t.writeErr == nil {
		t.writeErr = err
	}
	t.mu.Unlock()
	return n, err
}

// startData starts the clock for message data: from now until endData,
// writes must keep up an average of minRate bytes per second after a grace
// of one timeout, so that a server reading a trickle cannot hold the
// session for as long as the context allows. dotted says the data ends
// with a lone dot (DATA), which the transcript summarises up to; BDAT
// chunks announce their own size.
func (t *transport) startData(dotted bool) {
	t.mu.Lock()
	t.inData, t.dataStart, t.dataWritten = true, time.Now(), 0
	t.mu.Unlock()
	if dotted && t.tr != nil {
		t.tr.startData()
	}
}

func (t *transport) endData() {
	t.mu.Lock()
	t.inData = false
	t.mu.Unlock()
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

// startTLS replaces the socket with a TLS client over it and runs the
// handshake now, so that a bad certificate fails here and not at the first
// command. Bytes the server sent before the handshake and that were not
// read yet are dropped, as RFC 3207 5 demands.
func (t *transport) startTLS(ctx context.Context, cfg *tls.Config) (*tls.Conn, error) {
	t.mu.Lock()
	tc := tls.Client(t.conn, cfg)
	t.conn = tc
	t.mu.Unlock()
	t.br.Reset(connReader{t})
	t.pending, t.replyLines, t.replyBytes, t.multiCode = nil, 0, 0, ""
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

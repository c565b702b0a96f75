package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Connection is a configured handle to one SMTP server, safe for use by
// many goroutines, like database/sql's DB: it opens SMTP sessions when they
// are needed and keeps them for the next message. Configure it once with
// NewConnection and send many messages through it; Close it when done.
type Connection struct {
	cfg   *config
	sink  *transcriptSink
	slots chan struct{} // a token for each session allowed to be in use
	// wantSlot tells an idle SendAll stream that someone waits for a
	// slot.
	wantSlot chan struct{}
	done     chan struct{} // closed by Close
	// stop ends every operation in flight, dials included, when Close
	// is called.
	stopCtx context.Context
	stop    context.CancelFunc

	limiter *limiter // nil without WithRateLimit
	stats   counters

	mu          sync.Mutex
	idle        []*session
	closed      bool
	draining    bool           // Shutdown has started
	active      int            // operations in progress, for Shutdown
	drained     chan struct{}  // closed when Shutdown waits and active is 0
	drainedShut bool           // drained is closed
	bg          sync.WaitGroup // sessions being retired, for Close
	nextID      int
	ext         map[string]string // from the most recent handshake
	tls         *tls.ConnectionState
}

// SendResult reports what happened to one message.
type SendResult struct {
	// MessageID is the Message-ID header value, without angle brackets
	// (Send and SendAll only).
	MessageID string
	// Accepted lists the envelope recipients the server accepted.
	Accepted []string
	// Rejected lists the recipients the server refused; it is empty
	// unless the message was sent with partial delivery.
	Rejected []RejectedRecipient
	// Response is the server's reply text after the message, which often
	// carries its queue ID; after retries, the last one's.
	Response string
	// Attempts is how many transactions the message took: 1 unless it
	// was retried (WithRetry).
	Attempts int
}

// NewConnection returns a Connection to server, given as "host" or
// "host:port", configured by opts. It checks the options but does not dial:
// an invalid option is an error here, a network problem surfaces at Connect
// or at the first Send.
func NewConnection(server string, opts ...Option) (*Connection, error) {
	cfg, err := newConfig(server, opts)
	if err != nil {
		return nil, err
	}
	stopCtx, stop := context.WithCancel(context.Background())
	return &Connection{
		cfg:      cfg,
		sink:     newTranscriptSink(cfg),
		slots:    make(chan struct{}, cfg.maxConns),
		wantSlot: make(chan struct{}, 1),
		done:     make(chan struct{}),
		stopCtx:  stopCtx,
		stop:     stop,
		limiter:  newLimiter(cfg.rate),
	}, nil
}

// Connect opens a session now (dial, greeting, TLS, authentication) and
// keeps it for the next Send, so that a wrong address, certificate or
// password shows up at start-up. It returns the same errors Send would.
func (c *Connection) Connect(ctx context.Context) error {
	done, err := c.begin()
	if err != nil {
		return err
	}
	defer done()
	return c.run(ctx, func(context.Context, *session) error { return nil }, nil)
}

// Send sends msg: it validates it, derives the envelope (From; To, Cc and
// Bcc), and streams the rendered message to the server. Invalid input is an
// error before anything is sent. A refused recipient is a
// *RecipientsError, a refused command an *SMTPError; see the package
// documentation for the rest.
func (c *Connection) Send(ctx context.Context, msg *Message) (*SendResult, error) {
	if msg == nil {
		return nil, errors.New("mailer: Send(nil)")
	}
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	src := c.messageSend(msg, newStamp(msg))
	defer src.release()
	return c.deliver(ctx, src.build, src.rewind)
}

// messageSource makes the transactions of one message, attempt after
// attempt, keeping what a read-once body needs between them.
type messageSource struct {
	msg  *Message
	st   stamp
	sigs []DKIM
	once bool // an attachment's body can be read only once

	mu     sync.Mutex
	sp     *spool // the rendering kept for DKIM's second reading, if once
	spUTF8 bool   // the server took UTF-8 when sp was rendered
	read   bool   // an attempt rendered the body (once: it is spent)
}

// messageSend returns the source of msg's transactions, fixed by st and
// signed with DKIM when configured; release it when the send is over.
func (c *Connection) messageSend(msg *Message, st stamp) *messageSource {
	sigs := msg.DKIM
	if sigs == nil {
		sigs = c.cfg.dkim
	}
	return &messageSource{msg: msg, st: st, sigs: sigs, once: msg.readOnce()}
}

// build returns the transaction for an attempt on s.
func (m *messageSource) build(s *session) (*transaction, error) {
	utf8 := s.has("SMTPUTF8")
	p, err := m.msg.prepare(utf8, m.st)
	if err != nil {
		return nil, err
	}
	render := func(w io.Writer) error {
		m.mu.Lock()
		m.read = true
		m.mu.Unlock()
		_, err := p.writeTo(w)
		return err
	}
	tx := &transaction{env: p.envelope, utf8: p.utf8, id: p.messageID, body: render}
	if len(m.sigs) == 0 {
		return tx, nil
	}
	if m.once {
		// A body read once is kept for the second reading, and for the
		// attempts after this one.
		m.mu.Lock()
		sp, spUTF8 := m.sp, m.spUTF8
		m.mu.Unlock()
		if sp == nil || spUTF8 != utf8 {
			if sp != nil {
				return nil, errors.New("mailer: the message has an attachment read once and must be rendered again for this server")
			}
			sp = &spool{}
			if err := render(sp); err != nil {
				sp.Close()
				return nil, err
			}
			m.mu.Lock()
			m.sp, m.spUTF8 = sp, utf8
			m.mu.Unlock()
		}
		render = func(w io.Writer) error {
			r, err := sp.reader()
			if err == nil {
				_, err = io.Copy(w, r)
			}
			return err
		}
	}
	sig, err := dkimSignatures(m.sigs, render)
	if err != nil {
		return nil, err
	}
	tx.body = func(w io.Writer) error {
		if _, err := io.WriteString(w, sig); err != nil {
			return err
		}
		return render(w)
	}
	return tx, nil
}

// rewind reports whether the message can be sent again: always, unless
// an attachment read once was read and not kept.
func (m *messageSource) rewind() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.once || m.sp != nil || !m.read
}

// release frees what was kept for the attempts.
func (m *messageSource) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sp != nil {
		m.sp.Close()
		m.sp = nil
	}
}

// SendRaw sends the message read from r, which must be a complete RFC 5322
// message (header, blank line, body), to the envelope's recipients. Line
// endings are normalised to CRLF. With WithDKIM the message is signed:
// read twice when r is an io.Seeker, else kept for the second reading (in
// memory up to 1 MiB, then in a temporary file). If r fails, the connection is dropped so
// that no truncated message is delivered. When r has a Len method (as
// bytes.Reader and strings.Reader do) the size is checked against the
// server's SIZE before sending. With WithRetry, a message already read is
// sent again only if r is an io.Seeker.
func (c *Connection) SendRaw(ctx context.Context, env Envelope, r io.Reader) (*SendResult, error) {
	if err := checkEnvelope(env); err != nil {
		return nil, err
	}
	utf8 := !isASCII(env.From)
	for _, to := range env.To {
		utf8 = utf8 || !isASCII(to)
	}
	var size int64
	if l, ok := r.(interface{ Len() int }); ok {
		size = int64(l.Len())
	}
	src := &rewinder{r: r}
	if sk, ok := r.(io.Seeker); ok {
		if pos, err := sk.Seek(0, io.SeekCurrent); err == nil {
			src.seeker, src.start = sk, pos
		}
	}
	var sig string
	if len(c.cfg.dkim) > 0 {
		if src.seeker == nil {
			// Read once: kept for the second reading.
			sp := &spool{}
			defer sp.Close()
			if _, err := io.Copy(sp, r); err != nil {
				return nil, &readerError{err}
			}
			rs, err := sp.reader()
			if err != nil {
				return nil, err
			}
			src = &rewinder{r: rs, seeker: rs}
		}
		var err error
		if sig, err = dkimSignatures(c.cfg.dkim, func(w io.Writer) error {
			_, err := io.Copy(w, src)
			return err
		}); err != nil {
			return nil, err
		}
		if !src.rewind() {
			return nil, errors.New("mailer: the message could not be read again after DKIM signing")
		}
		if size > 0 {
			size += int64(len(sig))
		}
	}
	build := func(*session) (*transaction, error) {
		return &transaction{env: env, utf8: utf8, size: size, body: func(w io.Writer) error {
			if _, err := io.WriteString(w, sig); err != nil {
				return err
			}
			_, err := io.Copy(w, src)
			return err
		}}, nil
	}
	return c.deliver(ctx, build, src.rewind)
}

// rewinder reads the caller's reader for SendRaw and tells whether it can
// be read again from the start for a retry.
type rewinder struct {
	r      io.Reader
	seeker io.Seeker
	start  int64
	read   bool
}

func (r *rewinder) Read(p []byte) (int, error) {
	r.read = true
	return r.r.Read(p)
}

// rewind makes the reader ready for another attempt; false means it
// cannot be.
func (r *rewinder) rewind() bool {
	if !r.read {
		return true
	}
	if r.seeker == nil {
		return false
	}
	_, err := r.seeker.Seek(r.start, io.SeekStart)
	r.read = err != nil
	return err == nil
}

// checkEnvelope rejects envelope addresses that cannot be sent as given,
// by the rule of checkAddress. The empty From is the null reverse-path of
// bounces and is allowed.
func checkEnvelope(env Envelope) error {
	if len(env.To) == 0 {
		return fmt.Errorf("%w: no recipients", ErrInvalidAddress)
	}
	if env.From != "" {
		if err := checkAddress(env.From); err != nil {
			return err
		}
	}
	for _, a := range env.To {
		if err := checkAddress(a); err != nil {
			return err
		}
	}
	return checkDelivery(env)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Noop sends NOOP on a session, opening one if needed, to check that the
// server answers. A failure is returned as Send would return it.
func (c *Connection) Noop(ctx context.Context) error {
	done, err := c.begin()
	if err != nil {
		return err
	}
	defer done()
	return c.run(ctx, func(ctx context.Context, s *session) error { return s.noop(ctx) }, nil)
}

// Verify asks the server whether addr is a valid mailbox (VRFY). It returns
// nil if the server confirms it (250, or 251 for a mailbox it forwards to);
// otherwise an *SMTPError whose
// Code tells "cannot verify, will try" (252) from "no such user" (550) and
// "VRFY disabled" (502). Many servers answer 252 to everything.
func (c *Connection) Verify(ctx context.Context, addr string) error {
	if err := checkVerify(addr); err != nil {
		return err
	}
	done, err := c.begin()
	if err != nil {
		return err
	}
	defer done()
	return c.run(ctx, func(ctx context.Context, s *session) error { return s.verify(ctx, addr) }, nil)
}

// checkVerify checks VRFY's argument: an address by the rule of every
// address sent, or a user name (RFC 5321 3.5.3) of printable characters
// within a path's length.
func checkVerify(arg string) error {
	if strings.Contains(arg, "@") {
		return checkAddress(arg)
	}
	if strings.ContainsAny(arg, "\r\n\x00") {
		return fmt.Errorf("%w: %s", ErrHeaderInjection, quoteCut(arg))
	}
	if arg == "" || len(arg) > 256 || !utf8.ValidString(arg) || strings.IndexFunc(arg, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: VRFY %s", ErrInvalidAddress, quoteCut(arg))
	}
	return nil
}

// Extensions returns the EHLO keywords the server announced in the most
// recent session (upper case, mapped to their parameters), or nil before
// the first session. Call Connect first to have them at start-up.
func (c *Connection) Extensions() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.ext)
}

// HasExtension reports whether the server announced the EHLO keyword name
// (case-insensitive) in the most recent session.
func (c *Connection) HasExtension(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ext[strings.ToUpper(name)]
	return ok
}

// AuthMechanisms returns the SASL mechanisms the server offered in the most
// recent session (after STARTTLS, if used), or nil if none.
func (c *Connection) AuthMechanisms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return authMechanisms(c.ext)
}

// MaxMessageSize returns the message size limit the server announced with
// SIZE; ok is false if it announced none (0 with ok means no limit).
func (c *Connection) MaxMessageSize() (size int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.ext["SIZE"]
	if !ok {
		return 0, false
	}
	var n int64
	if _, err := fmt.Sscan(v, &n); err != nil || n < 0 {
		return 0, v == ""
	}
	return n, true
}

// TLSConnectionState returns the TLS state of the most recent session; ok
// is false if it was not encrypted or no session was opened yet.
func (c *Connection) TLSConnectionState() (state tls.ConnectionState, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tls, true
}

// run calls fn with a session and a context that also ends when the
// Connection is closed. A pooled session that turns out to be dead at the
// start of a transaction (staleError: nothing was committed) is replaced
// by a new one and fn runs again, once rewind (if not nil) has made the
// message ready to be read again; when it cannot, the error is returned.
func (c *Connection) run(ctx context.Context, fn func(context.Context, *session) error, rewind func() bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stopCtx, cancel)()
	for attempt := 0; ; attempt++ {
		s, err := c.acquire(ctx)
		if err != nil {
			return c.closedErr(err)
		}
		err = fn(ctx, s)
		c.release(s)
		var stale *staleError
		if errors.As(err, &stale) {
			if attempt < c.cfg.maxConns && (rewind == nil || rewind()) {
				continue
			}
			return c.closedErr(stale.err)
		}
		return c.closedErr(err)
	}
}

// closedErr marks err as caused by Close, when it was.
func (c *Connection) closedErr(err error) error {
	if err == nil || c.stopCtx.Err() == nil || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

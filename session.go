package mailer

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/net/proxy"
)

// session is one SMTP connection: dialled, greeted, upgraded and
// authenticated, then used for one transaction at a time. go-smtp's Client
// drives the protocol; the session speaks the opening itself (greeting,
// STARTTLS, eager handshake) because go-smtp cannot do opportunistic
// STARTTLS, says "EHLO localhost" before STARTTLS and delays the handshake.
type session struct {
	cfg  *config
	id   int
	sink *transcriptSink
	t    *transport
	c    *smtp.Client

	addr     string
	greeting []byte            // the greeting reply, replayed to each go-smtp client
	ext      map[string]string // EHLO keywords (upper case) and their parameters
	mech     string            // the AUTH mechanism used, if any

	bw    *bufio.Writer // the pipelined path's writer over t
	chunk []byte        // the BDAT chunk buffer, made on first use

	opened    time.Time
	lastUsed  time.Time
	messages  int         // transactions started
	idleTimer *time.Timer // retires the session when it idles too long
	idleSince time.Time   // when it last went back to the pool
	used      bool        // has carried a command after the opening
	dead      bool        // must not be used again
}

// transaction is one message to send: the envelope and a function that
// writes the message data.
type transaction struct {
	env     Envelope
	utf8    bool   // the envelope needs SMTPUTF8
	size    int64  // the message size if known, else 0
	id      string // the Message-ID, if known
	partial bool   // partial delivery, resolved from env.Delivery and the Connection
	body    func(io.Writer) error
	cleanup func() // releases what body holds (a spool), if anything
	written int64  // bytes of message data written, for the log
}

// done releases what the transaction holds once it is over.
func (tx *transaction) done() {
	if tx.cleanup != nil {
		tx.cleanup()
		tx.cleanup = nil
	}
}

// write runs tx.body into w, counting what it writes.
func (tx *transaction) write(w io.Writer) error {
	cw := &countWriter{w: w}
	err := tx.body(cw)
	tx.written = cw.n
	return err
}

// dial opens a session: connect, TLS, greeting, EHLO, STARTTLS, AUTH.
func dial(ctx context.Context, cfg *config, sink *transcriptSink, id int) (*session, error) {
	security := cfg.security.resolve(cfg.port)
	s := &session{cfg: cfg, id: id, sink: sink, addr: net.JoinHostPort(cfg.host, strconv.Itoa(cfg.port))}
	raw, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	s.t = newTransport(raw, newTranscript(sink, id), cfg.timeout, cfg.minDataRate)
	unbind := s.t.bind(ctx)
	defer unbind()
	if err := s.open(ctx, security); err != nil {
		s.t.Close()
		return nil, err
	}
	s.opened = time.Now()
	s.lastUsed = s.opened
	attrs := []slog.Attr{slog.String("server", s.addr)}
	if st, ok := s.t.tlsState(); ok {
		attrs = append(attrs, slog.String("tls", tls.VersionName(st.Version)),
			slog.String("cipher", tls.CipherSuiteName(st.CipherSuite)))
	}
	if s.mech != "" {
		attrs = append(attrs, slog.String("auth", s.mech))
	}
	sink.event(id, "smtp session open", attrs...)
	return s, nil
}

// connect makes the TCP connection, through the proxy if there is one.
func (s *session) connect(ctx context.Context) (net.Conn, error) {
	cfg := s.cfg
	nd := &net.Dialer{}
	if cfg.sourceAddr != nil {
		// Only when set: a typed nil in LocalAddr reads "dial tcp <nil>->".
		nd.LocalAddr = cfg.sourceAddr
	}
	var base proxy.ContextDialer = nd
	if cfg.dialer != nil {
		base = cfg.dialer
	}
	d, err := cfg.proxyDialer(base)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout)
	defer cancel()
	conn, err := d.DialContext(cctx, "tcp", s.addr)
	if err != nil {
		var pe *ProxyError
		switch {
		case ctx.Err() != nil:
			// The caller's end, not the proxy's or the network's.
			return nil, fmt.Errorf("mailer: connecting to %s: %w", s.addr, ctx.Err())
		case cctx.Err() != nil || isTimeout(err) || errors.Is(err, context.DeadlineExceeded):
			return nil, &timeoutError{what: fmt.Sprintf("connecting to %s: no connection within %v", s.addr, cfg.connectTimeout), err: err}
		case errors.As(err, &pe):
			return nil, err
		}
		return nil, fmt.Errorf("mailer: connecting to %s: %w", s.addr, err)
	}
	return conn, nil
}

func (s *session) open(ctx context.Context, security Security) error {
	if security == SecurityTLS {
		if err := s.handshake(ctx, "TLS handshake"); err != nil {
			return err
		}
	}
	if err := s.readGreeting(ctx, security); err != nil {
		return err
	}
	if err := s.hello(ctx); err != nil {
		return err
	}
	if security == SecuritySTARTTLS || security == SecuritySTARTTLSOptional {
		if err := s.startTLS(ctx, security == SecuritySTARTTLS); err != nil {
			return err
		}
	}
	if s.cfg.auth.enabled() {
		_, encrypted := s.t.tlsState()
		mech, err := s.cfg.auth.authenticate(ctx, authFunc(s.auth), authMechanisms(s.ext), encrypted)
		if err != nil {
			cmd := "AUTH"
			if mech != "" {
				cmd += " " + mech
			}
			err = s.fail(ctx, cmd, s.cfg.timeout, err)
			s.leave(ctx)
			return err
		}
		s.mech = mech
	}
	return nil
}

// handshake runs the TLS handshake within the greeting timeout.
func (s *session) handshake(ctx context.Context, what string) error {
	hctx, cancel := context.WithTimeout(ctx, s.cfg.greetingTimeout)
	defer cancel()
	_, err := s.t.startTLS(hctx, s.cfg.newTLSConfig())
	if err == nil {
		return nil
	}
	var rh tls.RecordHeaderError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("mailer: %s with %s: %w", what, s.addr, ctx.Err())
	case hctx.Err() != nil:
		return &timeoutError{what: fmt.Sprintf("%s with %s: no answer within %v", what, s.addr, s.cfg.greetingTimeout), err: err}
	case errors.As(err, &rh) && what == "TLS handshake":
		return fmt.Errorf("mailer: %s with %s: the server answered in plain text (%q): this port expects SMTP before TLS; use SecuritySTARTTLS: %w",
			what, s.addr, rh.RecordHeader[:], ErrTLSRequired)
	}
	return &handshakeError{what: what, addr: s.addr, err: err}
}

// readGreeting reads the 220 banner within the greeting timeout and keeps
// its bytes for go-smtp, which reads a greeting of its own.
func (s *session) readGreeting(ctx context.Context, security Security) error {
	_ = s.t.SetDeadline(time.Now().Add(s.cfg.greetingTimeout))
	defer s.t.SetDeadline(time.Time{})
	if b, err := s.t.peekByte(); err == nil && (b == 0x15 || b == 0x16) {
		return fmt.Errorf("mailer: greeting from %s: got a TLS record: this port speaks TLS at once; use SecurityTLS", s.addr)
	}
	s.t.startCapture()
	code, msg, err := s.t.readReply()
	greeting := s.t.stopCapture()
	if err != nil {
		if s.t.bytesRead() == 0 && isTimeout(err) && !ctxExpired(ctx) && security != SecurityTLS {
			return &timeoutError{
				what: fmt.Sprintf("no greeting from %s within %v: is this an implicit-TLS port? try SecurityTLS", s.addr, s.cfg.greetingTimeout),
				err:  err,
			}
		}
		return s.fail(ctx, "greeting", s.cfg.greetingTimeout, err)
	}
	if code != 220 {
		return s.fail(ctx, "greeting", 0, newReply("greeting", code, msg))
	}
	s.greeting = greeting
	s.t.setReplay(greeting)
	return nil
}

// hello makes a go-smtp client for the connection as it is now and runs
// EHLO (HELO if refused), recording the extensions.
func (s *session) hello(ctx context.Context) error {
	s.c = smtp.NewClient(s.t)
	s.c.CommandTimeout = s.cfg.timeout
	s.c.SubmissionTimeout = s.cfg.dataTimeout
	s.t.startCapture()
	err := s.c.Hello(s.localName())
	reply := s.t.stopCapture()
	if err != nil {
		return s.fail(ctx, "EHLO", s.cfg.timeout, err)
	}
	s.ext = parseEHLO(reply)
	s.t.ackAtOnce(s.has("PIPELINING"))
	return nil
}

// localName returns the EHLO name: the configured one, else the machine's
// fully qualified name, else the address literal of the local end (not
// through a proxy, whose server sees the proxy's address), else
// "localhost".
func (s *session) localName() string {
	if s.cfg.localName != "" {
		return s.cfg.localName
	}
	if h := hostName(); h != "" {
		return h
	}
	if ta, ok := s.t.LocalAddr().(*net.TCPAddr); ok && s.cfg.proxy == nil && s.cfg.dialer == nil && !s.cfg.proxyFromEnv {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			ip = ip.Unmap()
			if ip.Is4() {
				return "[" + ip.String() + "]"
			}
			return "[IPv6:" + ip.String() + "]"
		}
	}
	return "localhost"
}

// startTLS upgrades the connection. go-smtp's own STARTTLS cannot be used:
// it wraps the transport in TLS, which would put ciphertext in the
// transcript and take the socket out of the session's hands.
func (s *session) startTLS(ctx context.Context, required bool) error {
	if _, ok := s.ext["STARTTLS"]; !ok {
		if !required {
			return nil
		}
		s.leave(ctx)
		return fmt.Errorf("%w: %s does not offer STARTTLS (nothing was sent; SecuritySTARTTLSOptional would go on unencrypted)", ErrTLSRequired, s.addr)
	}
	// Bytes the server sends after this reply and before the handshake
	// are dropped when TLS starts, as RFC 3207 5 demands.
	code, msg, err := s.command("STARTTLS")
	if err != nil {
		return s.fail(ctx, "STARTTLS", s.cfg.timeout, err)
	}
	if code != 220 {
		serr := s.fail(ctx, "STARTTLS", 0, newReply("STARTTLS", code, msg))
		if !required && !s.dead {
			return nil
		}
		s.leave(ctx)
		return fmt.Errorf("%w: %w", ErrTLSRequired, serr)
	}
	if err := s.handshake(ctx, "STARTTLS handshake"); err != nil {
		return err
	}
	s.t.setReplay(s.greeting)
	return s.hello(ctx)
}

// command writes one command line and reads its reply, within the command
// timeout. The session uses it for the commands it speaks itself.
func (s *session) command(line string) (int, string, error) {
	_ = s.t.SetDeadline(time.Now().Add(s.cfg.timeout))
	defer s.t.SetDeadline(time.Time{})
	if _, err := io.WriteString(s.t, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return s.t.readReply()
}

// auth runs one SASL exchange (RFC 4954 4). It is written here rather than
// left to go-smtp's Client.Auth, which answers a final failure reply with
// a "*" cancel, and so that the transcript redacts every line the client
// writes during the exchange, whatever the server replies.
func (s *session) auth(cl sasl.Client) error {
	mech, ir, err := cl.Start()
	if err != nil {
		return err
	}
	line := "AUTH " + mech
	switch {
	case len(ir) > 0:
		line += " " + base64.StdEncoding.EncodeToString(ir)
	case ir != nil:
		line += " =" // an empty initial response
	}
	s.t.secret(true)
	defer s.t.secret(false)
	for {
		code, msg, err := s.command(line)
		if err != nil {
			return err
		}
		switch code {
		case 235:
			return nil
		case 334:
		default:
			return newReply("AUTH "+mech, code, msg)
		}
		challenge, err := base64.StdEncoding.DecodeString(msg)
		if err != nil {
			err = fmt.Errorf("mailer: AUTH %s: a challenge that is not base64: %q", mech, clip(msg))
		}
		var resp []byte
		if err == nil {
			resp, err = cl.Next(challenge)
		}
		if err != nil {
			// RFC 4954 4: "*" cancels the exchange; the server answers
			// 501, and the session stays usable.
			if _, _, cerr := s.command("*"); cerr != nil {
				return cerr
			}
			return err
		}
		line = base64.StdEncoding.EncodeToString(resp)
	}
}

// authFunc adapts a session's auth method to authClient.
type authFunc func(sasl.Client) error

func (f authFunc) Auth(c sasl.Client) error { return f(c) }

// parseEHLO returns the keywords of the last 250 reply in b.
func parseEHLO(b []byte) map[string]string {
	var reply, cur []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if len(line) < 3 {
			continue
		}
		cur = append(cur, line)
		if len(line) == 3 || line[3] != '-' {
			if strings.HasPrefix(line, "250") {
				reply = cur
			}
			cur = nil
		}
	}
	ext := map[string]string{}
	for i, line := range reply {
		if i == 0 || len(line) < 5 {
			continue
		}
		kw, param, _ := strings.Cut(line[4:], " ")
		ext[strings.ToUpper(kw)] = param
	}
	return ext
}

// authMechanisms returns the mechanisms of the AUTH keyword in ext, nil if
// there is none.
func authMechanisms(ext map[string]string) []string {
	v, ok := ext["AUTH"]
	if !ok {
		return nil
	}
	return strings.Fields(strings.ToUpper(v))
}

func (s *session) has(ext string) bool {
	_, ok := s.ext[ext]
	return ok
}

// maxSize returns the SIZE the server announced, 0 if none.
func (s *session) maxSize() int64 {
	n, err := strconv.ParseInt(s.ext["SIZE"], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// fail turns an error from a command into the package's error, and marks
// the session dead when the connection can no longer be trusted: anything
// but a server reply, or a 421 ("closing"). limit is the timeout that
// applied, for the message; an empty cmd leaves err's text as it is.
func (s *session) fail(ctx context.Context, cmd string, limit time.Duration, err error) error {
	err, dead := s.classify(ctx, cmd, limit, err)
	if dead {
		s.dead = true
	}
	return err
}

// classify is fail without marking the session: it returns the package's
// error and whether the session is dead.
func (s *session) classify(ctx context.Context, cmd string, limit time.Duration, err error) (error, bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return replyError(cmd, err), se.Code == 421
	}
	var ours *SMTPError
	if errors.As(err, &ours) {
		return err, ours.Code == 421
	}
	if errors.Is(err, smtp.ErrTooLongLine) {
		// go-smtp's own cap on a line, the same as the transport's.
		err = fmt.Errorf("%w: a line longer than %d bytes", ErrReplyTooLarge, maxReplyLine)
	}
	return s.connErr(ctx, cmd, limit, err), true
}

// connErr describes a failure of the connection itself.
func (s *session) connErr(ctx context.Context, cmd string, limit time.Duration, err error) error {
	var pe textproto.ProtocolError
	if errors.As(err, &pe) {
		err = fmt.Errorf("malformed reply: %s", clip(string(pe)))
	}
	switch {
	case ctxExpired(ctx):
		return fmt.Errorf("mailer: %s: %w", cmp.Or(cmd, "connection"), cmp.Or(ctx.Err(), context.DeadlineExceeded))
	case isTimeout(err) && limit > 0:
		return &timeoutError{what: strings.TrimPrefix(fmt.Sprintf("%s: no reply from %s within %v", cmd, s.addr, limit), ": "), err: err}
	case errors.Is(err, ErrTLSRequired), errors.Is(err, ErrAuthUnavailable), errors.Is(err, ErrInsecureAuth):
		// Raised before anything was sent: the connection is sound, but
		// the session is useless.
		return err
	}
	if cmd == "" || strings.HasPrefix(err.Error(), "mailer: ") {
		// Already one of the package's errors, which says what failed.
		return err
	}
	return fmt.Errorf("mailer: %s: %w", cmd, err)
}

// ctxExpired reports whether ctx is done or its deadline has passed. The
// transport's deadline is the context's, so a read can time out an
// instant before the context itself reports the end.
func ctxExpired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// send runs one transaction. Unless partial is set, a refused recipient
// resets the transaction and nothing is sent.
func (s *session) send(ctx context.Context, tx *transaction) (*SendResult, error) {
	unbind := s.t.bind(ctx)
	defer unbind()
	reused := s.used
	s.used = true
	if err := s.check(tx); err != nil {
		return nil, err
	}
	tx.partial = s.cfg.partial(tx.env.Delivery)
	s.messages++
	if s.has("PIPELINING") {
		return s.sendPipelined(ctx, tx, reused)
	}
	opts := &smtp.MailOptions{UTF8: tx.utf8, Size: tx.size, RequireTLS: tx.env.RequireTLS}
	if d := tx.env.DSN; d != nil {
		opts.Return, opts.EnvelopeID = smtp.DSNReturn(d.Return), d.EnvelopeID
	}
	if err := s.c.Mail(tx.env.From, opts); err != nil {
		err = s.fail(ctx, "MAIL", s.cfg.timeout, err)
		if reused && s.dead && ctx.Err() == nil {
			return nil, &staleError{err}
		}
		s.reset(ctx)
		return nil, err
	}
	res := &SendResult{}
	for _, to := range tx.env.To {
		err := s.c.Rcpt(to, tx.env.DSN.rcptOptions(to))
		if err == nil {
			res.Accepted = append(res.Accepted, to)
			continue
		}
		err = s.fail(ctx, "RCPT", s.cfg.timeout, err)
		if s.dead {
			return nil, err
		}
		res.Rejected = append(res.Rejected, RejectedRecipient{Address: to, Err: err})
	}
	if len(res.Rejected) > 0 && (!tx.partial || len(res.Accepted) == 0) {
		s.reset(ctx)
		return nil, &RecipientsError{Rejected: res.Rejected}
	}
	w, err := s.c.Data()
	if err != nil {
		err = s.fail(ctx, "DATA", s.cfg.timeout, err)
		s.reset(ctx)
		return nil, envelopeFailure(res, tx.partial, err)
	}
	s.t.resetWriteErr()
	s.t.startData(true)
	cw := newCRLFWriter(w)
	err = tx.write(cw)
	if err == nil {
		err = cw.Close()
	}
	s.t.endData()
	if err != nil {
		// Never let the final dot commit a truncated message: drop the
		// connection instead.
		s.dead = true
		s.t.Close()
		if werr := s.t.lastWriteErr(); werr != nil {
			return nil, s.fail(ctx, "DATA", s.cfg.timeout, werr)
		}
		return nil, &readerError{err}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		err = finalReply(s.fail(ctx, "DATA", s.cfg.dataTimeout, err))
		if !s.dead {
			s.reset(ctx)
			return nil, err
		}
		if s.t.lastWriteErr() == nil {
			var se *SMTPError
			if !errors.As(err, &se) {
				return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
			}
		}
		return nil, err
	}
	s.lastUsed = time.Now()
	res.Response = clip(resp.StatusText)
	return res, nil
}

// check returns why tx cannot be sent on s, before anything is.
func (s *session) check(tx *transaction) error {
	if limit := s.maxSize(); limit > 0 && tx.size > limit {
		return fmt.Errorf("%w: %d bytes, %s accepts %d", ErrMessageTooLarge, tx.size, s.addr, limit)
	}
	if tx.utf8 && !s.has("SMTPUTF8") {
		return fmt.Errorf("%w: an address has a non-ASCII local part", ErrSMTPUTF8Unsupported)
	}
	if tx.env.DSN != nil && !s.has("DSN") {
		return fmt.Errorf("%w: the message asks for DSN (RFC 3461), which %s does not announce", ErrExtensionUnsupported, s.addr)
	}
	if tx.env.RequireTLS {
		_, encrypted := s.t.tlsState()
		switch {
		case !encrypted:
			return fmt.Errorf("%w: REQUIRETLS needs a TLS session", ErrExtensionUnsupported)
		case s.cfg.skipVerify || s.cfg.tlsConfig != nil && s.cfg.tlsConfig.InsecureSkipVerify:
			return fmt.Errorf("%w: REQUIRETLS needs a verified certificate (RFC 8689 4.1), and verification is off", ErrExtensionUnsupported)
		case !s.has("REQUIRETLS"):
			return fmt.Errorf("%w: the message requires TLS on every hop (REQUIRETLS, RFC 8689), which %s does not announce", ErrExtensionUnsupported, s.addr)
		}
	}
	return nil
}

// writer returns the buffered writer the pipelined paths write with.
func (s *session) writer() *bufio.Writer {
	if s.bw == nil {
		s.bw = bufio.NewWriterSize(s.t, 16<<10)
	}
	return s.bw
}

// chunkBuf returns the session's empty BDAT chunk buffer of capacity
// maxChunk, made on first use.
func (s *session) chunkBuf() []byte {
	if s.chunk == nil {
		s.chunk = make([]byte, 0, maxChunk)
	}
	return s.chunk[:0]
}

// reset sends RSET after a failed transaction so the next one starts
// clean; a session that cannot be reset is dead.
func (s *session) reset(ctx context.Context) {
	if s.dead {
		return
	}
	if err := s.c.Reset(); err != nil {
		_ = s.fail(ctx, "RSET", s.cfg.timeout, err)
		s.dead = true
	}
}

// noop sends NOOP.
func (s *session) noop(ctx context.Context) error {
	unbind := s.t.bind(ctx)
	defer unbind()
	s.used = true
	if err := s.c.Noop(); err != nil {
		return s.fail(ctx, "NOOP", s.cfg.timeout, err)
	}
	s.lastUsed = time.Now()
	return nil
}

// verify sends VRFY.
func (s *session) verify(ctx context.Context, addr string) error {
	unbind := s.t.bind(ctx)
	defer unbind()
	s.used = true
	if err := s.c.Verify(addr); err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 251 {
			return s.fail(ctx, "VRFY", s.cfg.timeout, err)
		}
		// 251 "user not local; will forward": go-smtp wants exactly 250.
	}
	s.lastUsed = time.Now()
	return nil
}

// quit says QUIT, waiting at most wait (and the command timeout) for the
// reply, unless parent ends first, and closes the connection.
func (s *session) quit(parent context.Context, wait time.Duration) {
	ctx, cancel := context.WithTimeout(parent, min(s.cfg.timeout, wait))
	defer cancel()
	unbind := s.t.bind(ctx)
	if s.c != nil {
		_ = s.c.Quit()
	}
	unbind()
	s.close()
}

// leave ends a session that failed while opening: with QUIT when the
// connection is sound and ctx still running, else by closing it at once.
func (s *session) leave(ctx context.Context) {
	if s.dead || ctxExpired(ctx) {
		s.close()
		return
	}
	s.quit(context.Background(), quitTimeout)
}

// close drops the connection without QUIT.
func (s *session) close() {
	s.dead = true
	s.t.Close()
	s.sink.event(s.id, "smtp session closed", slog.String("server", s.addr))
}

// quitTimeout bounds the wait for the reply to QUIT.
const quitTimeout = 5 * time.Second

// staleError marks a pooled session found dead at MAIL: nothing was sent,
// so the transaction may run again on a fresh session.
type staleError struct{ err error }

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

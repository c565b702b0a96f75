package mailer

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The pipelined transaction, for servers that announce PIPELINING (RFC
// 2920): MAIL, every RCPT and DATA go out in one write, or with CHUNKING
// (RFC 3030) MAIL, the RCPTs and BDAT with the message. go-smtp's client
// waits for each reply before it sends the next command, so this path
// writes the commands itself over the connection the session owns and
// reads the replies with the transport's bounded reader. go-smtp keeps
// EHLO, STARTTLS, RSET, NOOP, VRFY and QUIT, and servers without
// PIPELINING.

// maxChunk is the size of a BDAT chunk: a message is streamed through one
// buffer of this size, never held whole.
const maxChunk = 256 << 10

// probeAfter is how long a pooled session may idle before a pipelined
// transaction first checks that the server has not closed it (see probe);
// on Linux the check costs one system call.
const probeAfter = 100 * time.Millisecond

// errAborted stops the message body when an earlier reply showed that
// the transaction cannot succeed.
var errAborted = errors.New("mailer: transaction refused before the message was sent")

// pipe is the state of one pipelined transaction.
type pipe struct {
	s       *session
	ctx     context.Context
	tx      *transaction
	partial bool
	res     *SendResult

	queued  []string // the commands whose replies are not read yet
	replies int      // replies read
	rcpt    int      // the next recipient whose reply is due
	mailErr error    // MAIL's refusal
	lastOut bool     // the end of the message (dot or BDAT LAST) was written
	netErr  error    // a chunk could not be sent or its replies read
}

// mailLine returns the MAIL command, with the parameters go-smtp's
// Client.Mail would give it.
func (s *session) mailLine(tx *transaction) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(tx.env.From)
	b.WriteString(">")
	s.mailParams(&b, tx)
	return b.String()
}

// sendPipelined runs tx as one pipelined transaction; see send.
func (s *session) sendPipelined(ctx context.Context, tx *transaction, reused bool) (*SendResult, error) {
	if reused && time.Since(s.lastUsed) > probeAfter {
		if err := s.probe(ctx); err != nil {
			return nil, &staleError{err}
		}
	}
	s.writer()
	p := &pipe{s: s, ctx: ctx, tx: tx, partial: tx.partial, res: &SendResult{}}
	s.t.resetWriteErr()
	p.command(s.mailLine(tx))
	for i := range tx.env.To {
		p.command(s.rcptLine(tx, i))
	}
	// All-or-nothing for several recipients must see every RCPT reply
	// before the message goes: DATA or BDAT could not be taken back.
	wait := !tx.partial && len(tx.env.To) > 1
	var err error
	if s.has("CHUNKING") {
		err = p.chunked(wait)
	} else {
		err = p.data(wait)
	}
	if err != nil {
		return nil, p.failed(err, reused)
	}
	s.lastUsed = time.Now()
	return p.res, nil
}

// probe checks, without waiting, that an idle session's server has not
// closed the connection or announced that it will (421): a pipelined
// transaction sends message data before the first reply, so a connection
// found dead after that could not be told from one lost after the
// message.
func (s *session) probe(ctx context.Context) error {
	if s.t.quiet() {
		return nil
	}
	// Something arrived, or the socket cannot tell: read what is there.
	// The deadline must lie ahead when the read starts, or the read would
	// fail without looking.
	_ = s.t.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := s.t.peekByte()
	_ = s.t.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
		// The server spoke unasked: a 421 before closing, most likely.
		_ = s.t.SetReadDeadline(time.Now().Add(s.cfg.timeout))
		code, msg, err := s.t.readReply()
		_ = s.t.SetReadDeadline(time.Time{})
		if err == nil {
			err = newReply("", code, msg)
		}
		s.dead = true
		return s.fail(ctx, "idle session", s.cfg.timeout, err)
	case isTimeout(err) && !ctxExpired(ctx):
		return nil
	}
	s.dead = true
	return s.fail(ctx, "idle session", 0, err)
}

// command queues a command line; flush sends what is queued.
func (p *pipe) command(line string) {
	_, _ = p.s.bw.WriteString(line)
	_, _ = p.s.bw.WriteString("\r\n")
	p.queued = append(p.queued, strings.Fields(line)[0])
}

// flush writes what is queued; the transport bounds each write.
func (p *pipe) flush() error {
	return p.s.bw.Flush()
}

// next reads the reply to the oldest queued command, within limit.
func (p *pipe) next(limit time.Duration) (cmd string, code int, msg string, err error) {
	cmd, p.queued = p.queued[0], p.queued[1:]
	_ = p.s.t.SetReadDeadline(time.Now().Add(limit))
	defer p.s.t.SetReadDeadline(time.Time{})
	code, msg, err = p.s.t.readReply()
	if err != nil {
		return cmd, 0, "", p.s.fail(p.ctx, cmd, limit, err)
	}
	p.replies++
	if code == 421 {
		return cmd, code, msg, p.s.fail(p.ctx, cmd, 0, newReply(cmd, code, msg))
	}
	return cmd, code, msg, nil
}

// envelope reads the replies to MAIL and the RCPTs, recording refusals.
func (p *pipe) envelope() error {
	for len(p.queued) > 0 && (p.queued[0] == "MAIL" || p.queued[0] == "RCPT") {
		cmd, code, msg, err := p.next(p.s.cfg.timeout)
		if err != nil {
			return err
		}
		switch {
		case cmd == "MAIL" && code != 250:
			p.mailErr = newReply("MAIL", code, msg)
		case cmd == "RCPT":
			to := p.tx.env.To[p.rcpt]
			p.rcpt++
			switch {
			case p.mailErr != nil:
				// Refused because MAIL was; mailErr says why.
			case code == 250 || code == 251:
				p.res.Accepted = append(p.res.Accepted, to)
			default:
				p.res.Rejected = append(p.res.Rejected, RejectedRecipient{Address: to, Err: newReply("RCPT", code, msg)})
			}
		}
	}
	return nil
}

// refusal returns why the message must not be sent, once the envelope's
// replies are in: MAIL refused, or recipients refused beyond what the
// policy allows.
func (p *pipe) refusal() error {
	switch {
	case p.mailErr != nil:
		return p.mailErr
	case len(p.res.Rejected) > 0 && (!p.partial || len(p.res.Accepted) == 0):
		return &RecipientsError{Rejected: p.res.Rejected}
	}
	return nil
}

// envelopeFailure is the error of a transaction that failed after its
// RCPT replies and before its message: err itself, or when recipients
// were refused, a *RecipientsError that keeps their own refusals (a 5xx
// one is never retried) and, with partial delivery, gives err to the
// recipients that were accepted (they may be retried).
func envelopeFailure(res *SendResult, partial bool, err error) error {
	if res == nil || len(res.Rejected) == 0 {
		return err
	}
	rejected := slices.Clone(res.Rejected)
	if partial {
		for _, to := range res.Accepted {
			rejected = append(rejected, RejectedRecipient{Address: to, Err: err})
		}
	}
	return &RecipientsError{Rejected: rejected}
}

// awaitEnvelope sends what is queued and reads the envelope's replies:
// the error says why the message must not follow.
func (p *pipe) awaitEnvelope() error {
	if err := p.flush(); err != nil {
		return err
	}
	if err := p.envelope(); err != nil {
		return err
	}
	return p.refusal()
}

// data ends the transaction with DATA: pipelined with the envelope unless
// wait says to see the envelope's replies first.
func (p *pipe) data(wait bool) error {
	if wait {
		if err := p.awaitEnvelope(); err != nil {
			return err
		}
	}
	p.command("DATA")
	if err := p.flush(); err != nil {
		return err
	}
	if err := p.envelope(); err != nil {
		return err
	}
	_, code, msg, err := p.next(p.s.cfg.timeout)
	if err != nil {
		return cmpErr(p.refusal(), envelopeFailure(p.res, p.partial, err))
	}
	refused := p.refusal()
	if code != 354 {
		return cmpErr(refused, envelopeFailure(p.res, p.partial, newReply("DATA", code, msg)))
	}
	if refused != nil {
		// RFC 2920 3.1: DATA accepted although nothing may be sent (no
		// recipient, or a refusal under all-or-nothing): a lone dot ends
		// it, and with no recipient nothing can be delivered.
		p.command(".")
		if err := p.flush(); err != nil {
			return err
		}
		if _, _, _, err := p.next(p.s.cfg.dataTimeout); err != nil {
			return err
		}
		return refused
	}
	s := p.s
	s.t.startData(true)
	dw := textproto.NewWriter(s.bw).DotWriter()
	cw := newCRLFWriter(dw)
	err = p.tx.write(cw)
	if err == nil {
		err = cw.Close()
	}
	s.t.endData()
	if err != nil {
		return p.bodyFailed(err)
	}
	if err := dw.Close(); err != nil {
		return p.bodyFailed(err)
	}
	p.queued = append(p.queued, "DATA")
	if err := p.flush(); err != nil {
		return p.bodyFailed(err)
	}
	p.lastOut = true
	return p.final()
}

// chunked ends the transaction with BDAT: the message goes in chunks of
// at most maxChunk, the last one marked LAST, pipelined with the envelope
// unless wait says to see the envelope's replies first.
func (p *pipe) chunked(wait bool) error {
	if wait {
		if err := p.awaitEnvelope(); err != nil {
			return err
		}
	}
	s := p.s
	cw := &chunker{buf: s.chunkBuf(), send: p.sendChunk}
	s.t.startData(false)
	crlf := newCRLFWriter(cw)
	err := p.tx.write(crlf)
	if err == nil {
		err = crlf.Close()
	}
	s.t.endData()
	if errors.Is(err, errAborted) {
		// The envelope was refused while chunks went out: an empty last
		// chunk ends the transaction, which the server refuses too.
		p.command("BDAT 0 LAST")
		if err := p.flush(); err != nil {
			return err
		}
		for len(p.queued) > 0 {
			if _, _, _, err := p.next(s.cfg.timeout); err != nil {
				return err
			}
		}
		return p.refusal()
	}
	if err == nil {
		err = cw.last()
	}
	if err != nil {
		return p.bodyFailed(cmpErr(p.netErr, err))
	}
	p.lastOut = true
	return p.final()
}

// final reads the replies still due, the last of them the server's verdict
// on the message.
func (p *pipe) final() error {
	if err := p.envelope(); err != nil {
		return p.lost(err)
	}
	for len(p.queued) > 1 {
		cmd, code, msg, err := p.next(p.s.cfg.timeout)
		if err != nil {
			return p.lost(err)
		}
		if code != 250 && p.refusal() == nil {
			// A chunk refused (552 too large, say): the transaction is
			// over, and the replies still due say no as well.
			p.mailErr = newReply(cmd, code, msg)
		}
	}
	_, code, msg, err := p.next(p.s.cfg.dataTimeout)
	if err != nil {
		return p.lost(finalReply(err))
	}
	if refused := p.refusal(); refused != nil {
		return refused
	}
	if code != 250 {
		return finalReply(newReply(p.tx.endCommand(p.s), code, msg))
	}
	p.res.Response = clip(msg)
	return nil
}

// endCommand names the command whose reply is the verdict on the message.
func (tx *transaction) endCommand(s *session) string {
	if s.has("CHUNKING") {
		return "BDAT"
	}
	return "DATA"
}

// lost qualifies an error that came after the end of the message was
// written: unless a reply already showed the message refused, the server
// may have accepted it.
func (p *pipe) lost(err error) error {
	var se *SMTPError
	if errors.As(err, &se) || p.refusal() != nil {
		return cmpErr(p.refusal(), err)
	}
	if p.s.t.lastWriteErr() != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
}

// bodyFailed handles a failure while the message was being written: the
// reader or a write failed before the end of the message, so dropping the
// connection guarantees that nothing is committed.
func (p *pipe) bodyFailed(err error) error {
	s := p.s
	s.dead = true
	s.t.Close()
	if p.netErr != nil {
		return p.netErr
	}
	if werr := s.t.lastWriteErr(); werr != nil {
		return s.fail(p.ctx, p.tx.endCommand(s), s.cfg.timeout, werr)
	}
	if ferr := p.refusal(); ferr != nil {
		return ferr
	}
	return &readerError{err}
}

// failed finishes a transaction that did not succeed: a session that is
// still sound is reset for the next one, and a reused session found dead
// before anything was sent is reported stale so that the transaction runs
// again on a new one.
func (p *pipe) failed(err error, reused bool) error {
	s := p.s
	if len(p.queued) > 0 {
		// Replies still due: the session cannot be brought back in step.
		s.dead = true
		s.t.Close()
	}
	if s.dead {
		// No reply at all and no end of message: the server was gone
		// before this transaction, and nothing can have been committed.
		if reused && p.replies == 0 && !p.lastOut && !ctxExpired(p.ctx) {
			return &staleError{err}
		}
		return err
	}
	s.reset(p.ctx)
	return err
}

// chunker cuts a message into BDAT chunks of its buffer's capacity. A
// full buffer is sent only when more data follows, so that the last chunk
// always carries LAST.
type chunker struct {
	buf  []byte
	tail byte // the last byte of the message so far
	send func(chunk []byte, last bool) error
}

func (c *chunker) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if len(c.buf) == cap(c.buf) {
			if err := c.send(c.buf, false); err != nil {
				return n, err
			}
			c.buf = c.buf[:0]
		}
		k := copy(c.buf[len(c.buf):cap(c.buf)], b)
		c.buf = c.buf[:len(c.buf)+k]
		c.tail = b[k-1]
		b = b[k:]
		n += k
	}
	return n, nil
}

// last sends the final chunk, ending the message with CRLF as DATA's dot
// writer would.
func (c *chunker) last() error {
	if c.tail != '\n' && (len(c.buf) > 0 || c.tail != 0) {
		if _, err := c.Write(crlf); err != nil {
			return err
		}
	}
	err := c.send(c.buf, true)
	c.buf = c.buf[:0]
	return err
}

// sendChunk writes one chunk. After a chunk that is not the last, the
// replies due before it are read: they have had a chunk's time to arrive,
// and a refusal stops the message early.
func (p *pipe) sendChunk(chunk []byte, last bool) error {
	line := "BDAT " + strconv.Itoa(len(chunk))
	if last {
		line += " LAST"
	}
	p.command(line)
	if _, err := p.s.bw.Write(chunk); err != nil {
		p.netErr = p.s.fail(p.ctx, "BDAT", p.s.cfg.timeout, err)
		return p.netErr
	}
	if err := p.flush(); err != nil {
		p.netErr = p.s.fail(p.ctx, "BDAT", p.s.cfg.timeout, err)
		return p.netErr
	}
	if last {
		return nil
	}
	// Read what is due before this chunk: the envelope, earlier chunks.
	if err := p.envelope(); err != nil {
		p.netErr = err
		return err
	}
	if p.refusal() != nil {
		return errAborted
	}
	for len(p.queued) > 1 {
		cmd, code, msg, err := p.next(p.s.cfg.timeout)
		if err != nil {
			p.netErr = err
			return err
		}
		if code != 250 {
			p.mailErr = newReply(cmd, code, msg)
			return errAborted
		}
	}
	return nil
}

package mailer

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// defaultPipelineDepth is how many transactions SendAll keeps in flight on
// one session by default.
const defaultPipelineDepth = 8

// SendAll sends every message msgs yields, through every session the pool
// allows (WithMaxConnections), and yields each message's result or error
// in the order of msgs, every message exactly once. A message's error is
// its own: the others go on.
//
// When the server announces PIPELINING, each session keeps a stream of
// transactions going: the next message's commands follow the previous
// message at once, without waiting for its reply (RFC 2920), and with
// CHUNKING up to WithPipelineDepth messages are in flight at once. Each
// transaction after the first on a session starts with RSET, so that a
// refused message cannot disturb the next. A message with several
// recipients sent all-or-nothing waits for its RCPT replies before its
// data, as Send does.
//
// An invalid message is an error, and nothing of it is sent. If the caller
// stops the iteration early, the messages already taken are finished (not
// yielded) and no more are taken from msgs. Cancelling ctx, or Close, ends
// every transaction not yet finished (one whose end was already sent
// fails with ErrOutcomeUnknown) and stops taking messages from msgs: those
// not taken are not yielded either. With WithRateLimit, a message waits for
// its turn before a session is taken for it.
func (c *Connection) SendAll(ctx context.Context, msgs iter.Seq[*Message]) iter.Seq2[*SendResult, error] {
	return func(yield func(*SendResult, error) bool) {
		end, err := c.begin()
		if err != nil {
			for range msgs {
				if !yield(nil, err) {
					return
				}
			}
			return
		}
		defer end()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(c.stopCtx, cancel)()
		feed, stopFeed := context.WithCancel(ctx)
		defer stopFeed()

		var retries sync.WaitGroup
		defer retries.Wait()
		after := func(j *job, res *SendResult, err error) {
			if j.msg == nil {
				j.settle(res, err)
				return
			}
			if j.src == nil {
				// Failed before its transaction (no session): checked
				// here, since a retry sends it without prepareTx.
				if verr := j.msg.Validate(); verr != nil {
					j.settle(nil, verr)
					return
				}
				j.src = c.messageSend(j.msg, newStamp(j.msg))
			}
			a := &attempt{c: c, build: j.src.build, rewind: j.src.rewind, start: j.start, n: 1, id: j.src.st.id,
				size: j.size.Load(), session: j.session, partial: c.cfg.partial(j.msg.delivery()), res: res, err: err}
			if c.cfg.retry.Attempts == 1 || err == nil && len(retryRecipients(res)) == 0 {
				// Nothing to retry: finish only reports.
				j.settle(a.finish(ctx))
				return
			}
			retries.Go(func() { j.settle(a.finish(ctx)) })
		}
		order := make(chan *job, c.cfg.maxConns*c.cfg.pipelineDepth*2)
		work := make(chan *job)
		go func() {
			defer close(order)
			defer close(work)
			for m := range msgs {
				j := &job{msg: m, done: make(chan struct{}), start: time.Now(), after: after}
				select {
				case order <- j:
				case <-feed.Done():
					return
				}
				select {
				case work <- j:
				case <-feed.Done():
					j.settle(nil, fmt.Errorf("mailer: not sent: %w", feed.Err()))
					return
				}
			}
		}()
		var wg sync.WaitGroup
		for range c.cfg.maxConns {
			wg.Go(func() { c.worker(ctx, work) })
		}
		stopped := false
		for j := range order {
			<-j.done
			if !stopped && !yield(j.res, c.closedErr(j.err)) {
				stopped = true
				stopFeed()
			}
		}
		wg.Wait()
	}
}

// job is one message of SendAll.
type job struct {
	msg      *Message
	src      *messageSource // made when the message is first prepared
	start    time.Time
	after    func(j *job, res *SendResult, err error) // retries and reports; calls settle
	admitted bool                                     // the rate limit let it go

	size    atomic.Int64 // bytes of message data written
	session int          // the session that carried it

	res  *SendResult
	err  error
	done chan struct{}
	once sync.Once
}

// finish ends the transaction that carried j: after retries, if any, j
// settles with the outcome.
func (j *job) finish(res *SendResult, err error) {
	j.once.Do(func() { j.after(j, res, err) })
}

// refuse ends j without a transaction: the message was invalid.
func (j *job) refuse(err error) {
	j.once.Do(func() { j.settle(nil, err) })
}

// settle records j's final outcome.
func (j *job) settle(res *SendResult, err error) {
	if j.src != nil {
		j.src.release()
	}
	j.res, j.err = res, err
	close(j.done)
}

// worker takes jobs until work is closed, each on a session of the pool.
// A job waits for the rate limit before a session is taken for it, so that
// no session idles while it waits.
func (c *Connection) worker(ctx context.Context, work <-chan *job) {
	var next *job
	for {
		if next == nil {
			var ok bool
			if next, ok = <-work; !ok {
				return
			}
		}
		if !next.admitted {
			if !c.admit(ctx, next) {
				next = nil
				continue
			}
		}
		s, err := c.acquire(ctx)
		if err != nil {
			next.finish(nil, err)
			next = nil
			continue
		}
		next = s.stream(ctx, c, next, work)
		c.release(s)
	}
}

// prepareTx returns the transaction for j's message on s. An invalid
// message is refused (not counted, as Send does not count it); a message
// the session cannot take ends as a failed send.
func (s *session) prepareTx(c *Connection, j *job) (*transaction, bool) {
	if j.msg == nil {
		j.refuse(errors.New("mailer: Send(nil)"))
		return nil, false
	}
	if j.src == nil {
		if err := j.msg.Validate(); err != nil {
			j.refuse(err)
			return nil, false
		}
		j.src = c.messageSend(j.msg, newStamp(j.msg))
	}
	tx, err := j.src.build(s)
	if err != nil {
		j.finish(nil, err)
		return nil, false
	}
	tx.partial = c.cfg.partial(tx.env.Delivery)
	j.session = s.id
	if err := s.check(tx); err != nil {
		tx.done()
		j.finish(nil, err)
		return nil, false
	}
	return tx, true
}

// admit waits for the rate limit before j's transaction; false means j
// ended without a transaction.
func (c *Connection) admit(ctx context.Context, j *job) bool {
	j.admitted = true
	if c.limiter == nil {
		return true
	}
	waited, err := c.limiter.wait(ctx)
	if waited {
		c.stats.rateLimitWaits.Add(1)
	}
	if err != nil {
		j.finish(nil, err)
		return false
	}
	return true
}

// admitNow lets j go if the rate limit allows it at once; false means j
// must wait, without the session.
func (c *Connection) admitNow(j *job) bool {
	if j.admitted || c.limiter == nil || c.limiter.allow() {
		j.admitted = true
		return true
	}
	return false
}

// stream sends first and then the jobs of work on s until work is closed,
// s fails or reaches a limit of the pool, a job must wait for the rate
// limit, or another sender wants a session while this one has nothing to
// do. It returns a job it took but did not start (the session turned out
// dead before anything was sent, or the job must wait for the rate limit),
// for the worker to carry on.
func (s *session) stream(ctx context.Context, c *Connection, first *job, work <-chan *job) *job {
	take := func() *job {
		if s.spent() {
			return nil
		}
		select {
		case j, ok := <-work:
			if !ok {
				return nil
			}
			return j
		case <-c.wantSlot:
			// Someone waits for a session while this one has nothing
			// to send: give it back to the pool.
			return nil
		}
	}
	if !s.has("PIPELINING") {
		for j := first; j != nil; j = take() {
			if !c.admitNow(j) {
				return j
			}
			tx, ok := s.prepareTx(c, j)
			if !ok {
				continue
			}
			res, err := s.send(ctx, tx)
			tx.done()
			var stale *staleError
			if errors.As(err, &stale) && j.src.rewind() {
				return j
			}
			j.size.Store(tx.written)
			if res != nil {
				res.MessageID = tx.id
			}
			j.finish(res, err)
			if s.dead {
				return nil
			}
		}
		return nil
	}
	unbind := s.t.bind(ctx)
	defer unbind()
	if s.used && time.Since(s.lastUsed) > probeAfter {
		if err := s.probe(ctx); err != nil {
			return first
		}
	}
	st := newStream(ctx, s, c)
	var pending *job
	for j := first; j != nil; {
		if !c.admitNow(j) {
			pending = j
			break
		}
		if !st.send(j) || s.spent() {
			break
		}
		// Commands and messages wait in the buffer while more follow at
		// once, so that several go out in one write; before waiting for
		// the next message, what is written goes out.
		select {
		case next, ok := <-work:
			j = next
			if !ok {
				j = nil
			}
			continue
		default:
		}
		if !st.flush() {
			break
		}
		j = take()
	}
	st.close()
	return pending
}

// streamTx is one transaction in flight in a stream.
type streamTx struct {
	j       *job
	id      string
	to      []string
	rset    bool       // RSET precedes MAIL
	chunked bool       // BDAT, else DATA
	partial bool       // partial delivery
	wait    bool       // the writer waits for the envelope's verdict
	verdict chan error // the envelope's verdict, when wait
	dataGo  chan bool  // DATA: send the message (true) or a lone dot (false); closed if DATA was refused
	chunks  chan bool  // BDAT: one value per chunk written, true for the last

	mu    sync.Mutex
	ended bool // the end of the message was (about to be) written
}

func (t *streamTx) setEnded() {
	t.mu.Lock()
	t.ended = true
	t.mu.Unlock()
}

func (t *streamTx) isEnded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ended
}

// stream is a session's pipeline of transactions: the caller's goroutine
// writes, a reader goroutine reads the replies in order, so that a full
// socket buffer can never stop the writer while the server waits for the
// client to read.
type stream struct {
	ctx      context.Context
	s        *session
	c        *Connection
	cfg      *config
	inflight chan *streamTx
	dead     chan struct{} // closed when the session fails
	deadOnce sync.Once
	readErr  error // why, once dead is closed
	reader   sync.WaitGroup
	started  bool // a transaction was written
	lastFail bool // the last transaction read failed (set by the reader)
}

func newStream(ctx context.Context, s *session, c *Connection) *stream {
	st := &stream{ctx: ctx, s: s, c: c, cfg: c.cfg, inflight: make(chan *streamTx, c.cfg.pipelineDepth), dead: make(chan struct{})}
	s.used = true
	s.writer()
	s.t.resetWriteErr()
	st.reader.Go(st.read)
	return st
}

// kill marks the session failed with err and drops the connection, which
// also ends a read or write in progress.
func (st *stream) kill(err error) {
	st.deadOnce.Do(func() {
		st.readErr = err
		st.s.dead = true
		st.s.t.Close()
		close(st.dead)
	})
}

// close waits for the transactions in flight and leaves the session ready
// for the next user.
func (st *stream) close() {
	st.flush()
	close(st.inflight)
	st.reader.Wait()
	if st.s.dead {
		return
	}
	st.s.lastUsed = time.Now()
	if st.lastFail {
		st.s.reset(st.ctx)
	}
}

// send writes j's transaction; false means the session can take no more.
func (st *stream) send(j *job) bool {
	s := st.s
	tx, ok := s.prepareTx(st.c, j)
	if !ok {
		return true
	}
	defer tx.done()
	s.messages++
	t := &streamTx{j: j, id: tx.id, to: tx.env.To, rset: st.started, chunked: s.has("CHUNKING"),
		partial: tx.partial, wait: !tx.partial && len(tx.env.To) > 1,
		verdict: make(chan error, 1), dataGo: make(chan bool, 1), chunks: make(chan bool, 2)}
	st.started = true
	bw := s.bw
	if t.rset {
		_, _ = bw.WriteString("RSET\r\n")
	}
	_, _ = bw.WriteString(s.mailLine(tx) + "\r\n")
	for i := range tx.env.To {
		_, _ = bw.WriteString(s.rcptLine(tx, i) + "\r\n")
	}
	defer func() { j.size.Store(tx.written) }()
	pushed := false
	if t.wait {
		if !st.push(t) || !st.flush() {
			return false
		}
		pushed = true
		select {
		case err := <-t.verdict:
			if err != nil {
				return true
			}
		case <-st.dead:
			return false
		}
	}
	if t.chunked {
		sc := &streamChunks{st: st, t: t, pushed: pushed}
		cw := &chunker{buf: s.chunkBuf(), send: sc.send}
		s.t.startData(false)
		crlf := newCRLFWriter(cw)
		err := tx.write(crlf)
		if err == nil {
			err = crlf.Close()
		}
		s.t.endData()
		if err == nil {
			err = cw.last()
		}
		return st.ended(t, err)
	}
	_, _ = bw.WriteString("DATA\r\n")
	if !pushed && !st.push(t) || !st.flush() {
		return false
	}
	var body bool
	select {
	case b, ok := <-t.dataGo:
		if !ok {
			return true // DATA refused: nothing more of this one
		}
		body = b
	case <-st.dead:
		return false
	}
	if !body {
		// RFC 2920 3.1: DATA accepted although nothing may be sent.
		t.setEnded()
		_, err := bw.WriteString(".\r\n")
		return st.ended(t, err)
	}
	s.t.startData(true)
	dw := textproto.NewWriter(bw).DotWriter()
	crlf := newCRLFWriter(dw)
	err := tx.write(crlf)
	if err == nil {
		err = crlf.Close()
	}
	s.t.endData()
	if err == nil {
		t.setEnded()
		err = dw.Close()
	}
	return st.ended(t, err)
}

// ended handles the outcome of writing a message: an error before its end
// (the caller's reader failed, or a write) drops the connection, which
// guarantees nothing of the message is committed.
func (st *stream) ended(t *streamTx, err error) bool {
	if err == nil {
		return true
	}
	if werr := st.s.t.lastWriteErr(); werr != nil {
		err, _ = st.s.classify(st.ctx, "DATA", st.cfg.timeout, werr)
	} else if !errors.Is(err, errStreamDead) {
		err = &readerError{err}
	}
	if !t.isEnded() {
		t.j.finish(nil, err)
	}
	st.kill(err)
	return false
}

// errStreamDead stops a message's writer when the session has failed.
var errStreamDead = errors.New("mailer: session failed")

// push hands t to the reader; what t wrote may still be in the buffer.
// When depth transactions are in flight already, it sends the buffer and
// waits.
func (st *stream) push(t *streamTx) bool {
	select {
	case st.inflight <- t:
		return true
	default:
	}
	if !st.flush() {
		t.j.finish(nil, st.readErr)
		return false
	}
	select {
	case st.inflight <- t:
		return true
	case <-st.dead:
		t.j.finish(nil, st.readErr)
		return false
	}
}

// flush sends what is buffered; a failure kills the session, and the
// transactions in flight end as the reader finds them.
func (st *stream) flush() bool {
	select {
	case <-st.dead:
		return false
	default:
	}
	if st.s.bw.Buffered() == 0 {
		return true
	}
	if err := st.s.bw.Flush(); err != nil {
		err, _ = st.s.classify(st.ctx, "DATA", st.cfg.timeout, cmpErr(st.s.t.lastWriteErr(), err))
		st.kill(err)
		return false
	}
	return true
}

// streamChunks sends a streamed message's BDAT chunks, handing each to
// the reader as it goes.
type streamChunks struct {
	st     *stream
	t      *streamTx
	pushed bool
}

func (c *streamChunks) send(chunk []byte, last bool) error {
	st, bw := c.st, c.st.s.bw
	line := "BDAT " + strconv.Itoa(len(chunk))
	if last {
		line += " LAST"
		c.t.setEnded()
	}
	_, _ = bw.WriteString(line + "\r\n")
	_, _ = bw.Write(chunk)
	if !c.pushed {
		c.pushed = true
		if !st.push(c.t) {
			return errStreamDead
		}
	}
	if !last && !st.flush() {
		return errStreamDead
	}
	select {
	case c.t.chunks <- last:
		return nil
	default:
	}
	if !st.flush() {
		return errStreamDead
	}
	select {
	case c.t.chunks <- last:
		return nil
	case <-st.dead:
		return errStreamDead
	}
}

// read reads the replies of the transactions in flight, in order.
func (st *stream) read() {
	for t := range st.inflight {
		select {
		case <-st.dead:
			st.abandon(t)
			continue
		default:
		}
		res, err, fatal := st.readTx(t)
		if fatal != nil {
			st.kill(fatal)
			if err == nil {
				err = fatal
			}
			if t.isEnded() && !isReply(err) {
				err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
			}
		}
		if res != nil {
			res.MessageID = t.id
		}
		st.lastFail = err != nil
		t.j.finish(res, err)
	}
}

// abandon ends a transaction the server will never answer, because the
// session failed before its replies were read.
func (st *stream) abandon(t *streamTx) {
	err := st.readErr
	if t.isEnded() && !isReply(err) {
		err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	t.j.finish(nil, err)
}

// isReply reports whether err is a server's reply: the server answered,
// so it did not take what came after.
func isReply(err error) bool {
	var se *SMTPError
	return errors.As(err, &se)
}

// readTx reads the replies of one transaction. err is the transaction's
// own failure; fatal, when not nil, is a failure of the session.
func (st *stream) readTx(t *streamTx) (res *SendResult, err, fatal error) {
	s := st.s
	reply := func(cmd string, limit time.Duration) (int, string, error) {
		_ = s.t.SetReadDeadline(time.Now().Add(limit))
		defer s.t.SetReadDeadline(time.Time{})
		code, msg, err := s.t.readReply()
		if err != nil {
			err, _ = s.classify(st.ctx, cmd, limit, err)
			return 0, "", err
		}
		if code == 421 {
			// The server is closing: it took nothing after this.
			return code, msg, newReply(cmd, code, msg)
		}
		return code, msg, nil
	}
	if t.rset {
		// A refused RSET does not end the transaction: the server may
		// still take the MAIL, RCPTs and message written behind it, and
		// their own replies say whether it did.
		if _, _, err := reply("RSET", st.cfg.timeout); err != nil {
			return nil, nil, err
		}
	}
	res = &SendResult{}
	var mailErr error
	code, msg, err := reply("MAIL", st.cfg.timeout)
	if err != nil {
		return nil, nil, err
	}
	if code != 250 {
		mailErr = newReply("MAIL", code, msg)
	}
	for _, to := range t.to {
		code, msg, err := reply("RCPT", st.cfg.timeout)
		switch {
		case err != nil:
			return nil, nil, err
		case mailErr != nil:
		case code == 250 || code == 251:
			res.Accepted = append(res.Accepted, to)
		default:
			res.Rejected = append(res.Rejected, RejectedRecipient{Address: to, Err: newReply("RCPT", code, msg)})
		}
	}
	refused := mailErr
	if refused == nil && len(res.Rejected) > 0 && (!t.partial || len(res.Accepted) == 0) {
		refused = &RecipientsError{Rejected: res.Rejected}
	}
	if t.wait {
		t.verdict <- refused
		if refused != nil {
			return nil, refused, nil
		}
	}
	if t.chunked {
		var chunkErr error
		for {
			var last bool
			select {
			case last = <-t.chunks:
			case <-st.dead:
				return nil, nil, st.readErr
			}
			limit := st.cfg.timeout
			if last {
				limit = st.cfg.dataTimeout
			}
			code, msg, err := reply("BDAT", limit)
			if last {
				err = finalReply(err)
			}
			if err != nil {
				return nil, nil, err
			}
			if code != 250 && chunkErr == nil {
				chunkErr = newReply("BDAT", code, msg)
				if last {
					chunkErr = finalReply(chunkErr)
				}
			}
			if last {
				if err := cmpErr(refused, chunkErr); err != nil {
					return nil, err, nil
				}
				res.Response = clip(msg)
				return res, nil, nil
			}
		}
	}
	code, msg, err = reply("DATA", st.cfg.timeout)
	if err != nil {
		return nil, cmpErr(refused, envelopeFailure(res, t.partial, err)), err
	}
	if code != 354 {
		close(t.dataGo)
		return nil, cmpErr(refused, envelopeFailure(res, t.partial, newReply("DATA", code, msg))), nil
	}
	t.dataGo <- refused == nil
	code, msg, err = reply("DATA", st.cfg.dataTimeout)
	err = finalReply(err)
	if err != nil {
		// After a lone dot, the refusal is the outcome whatever happens.
		return nil, refused, err
	}
	if refused != nil {
		return nil, refused, nil
	}
	if code != 250 {
		return nil, finalReply(newReply("DATA", code, msg)), nil
	}
	res.Response = clip(msg)
	return res, nil, nil
}

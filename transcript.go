package mailer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxTranscriptLine bounds how much of one protocol line is kept; the rest
// is cut, so that a server sending an endless line cannot grow memory.
const maxTranscriptLine = 4096

// transcriptSink is where the transcripts of all sessions of a Connection
// go: the slog logger, the plain debug writer, or both.
type transcriptSink struct {
	logger *slog.Logger
	mu     sync.Mutex // serialises writes to w
	w      io.Writer
	stamps bool
}

func newTranscriptSink(cfg *config) *transcriptSink {
	if cfg.logger == nil && cfg.debug == nil {
		return nil
	}
	return &transcriptSink{logger: cfg.logger, w: cfg.debug, stamps: cfg.debugStamps}
}

func (s *transcriptSink) line(session int, dir, text string) {
	if s.logger != nil {
		s.logger.LogAttrs(context.Background(), slog.LevelDebug, "smtp",
			slog.Int("session", session), slog.String("dir", dir), slog.String("line", text))
	}
	if s.w != nil {
		s.mu.Lock()
		if s.stamps {
			fmt.Fprintf(s.w, "%s %s: %s\n", time.Now().Format("15:04:05.000000"), dir, text)
		} else {
			fmt.Fprintf(s.w, "%s: %s\n", dir, text)
		}
		s.mu.Unlock()
	}
}

// event logs a connection event at Info level.
func (s *transcriptSink) event(session int, msg string, attrs ...slog.Attr) {
	if s == nil || s.logger == nil {
		return
	}
	attrs = append([]slog.Attr{slog.Int("session", session)}, attrs...)
	s.logger.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
}

// logs reports whether events are logged at all.
func (s *transcriptSink) logs() bool { return s != nil && s.logger != nil }

// message logs a message's outcome, at Info level when it was sent and
// Warn when it failed.
func (s *transcriptSink) message(level slog.Level, msg string, attrs ...slog.Attr) {
	if s.logs() {
		s.logger.LogAttrs(context.Background(), level, msg, attrs...)
	}
}

// transcript turns one session's byte streams into protocol lines. What
// is redacted is decided by what the client writes, never by the server's
// replies: while the session sends a credential (setSecret), every client
// line is redacted (an AUTH command keeps its mechanism name only), and
// message data from startData to the final dot is summarised as a byte
// count. Every line is escaped and cut like server text in errors.
type transcript struct {
	sink    *transcriptSink
	session int

	mu         sync.Mutex
	cbuf, sbuf []byte // partial client and server lines
	secret     bool   // the client is sending a credential
	inData     bool   // message data is being sent
	dataBytes  int64
	chunk      int64 // bytes of a BDAT chunk still to come
}

func newTranscript(sink *transcriptSink, session int) *transcript {
	if sink == nil {
		return nil
	}
	return &transcript{sink: sink, session: session}
}

// reset forgets partial lines, when TLS starts.
func (t *transcript) reset() {
	t.mu.Lock()
	t.cbuf, t.sbuf = t.cbuf[:0], t.sbuf[:0]
	t.mu.Unlock()
}

// setSecret marks the client lines written from now on as credentials, or
// no longer.
func (t *transcript) setSecret(on bool) {
	t.mu.Lock()
	t.secret = on
	t.mu.Unlock()
}

// startData summarises the client lines from now to the lone dot.
func (t *transcript) startData() {
	t.mu.Lock()
	t.inData, t.dataBytes = true, 0
	t.mu.Unlock()
}

func (t *transcript) client(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(p) > 0 {
		if t.chunk > 0 {
			// A BDAT chunk: counted, not shown.
			n := min(t.chunk, int64(len(p)))
			t.chunk -= n
			t.dataBytes += n
			p = p[n:]
			if t.chunk == 0 {
				t.sink.line(t.session, "C", fmt.Sprintf("[%d bytes of message data]", t.dataBytes))
			}
			continue
		}
		// Line by line, so that a BDAT command takes effect on the bytes
		// right after it.
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.cbuf = splitLines(t.cbuf, p, t.clientLine)
			return
		}
		t.cbuf = splitLines(t.cbuf, p[:i+1], t.clientLine)
		p = p[i+1:]
	}
}

func (t *transcript) server(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sbuf = splitLines(t.sbuf, p, t.serverLine)
}

// splitLines appends p to buf, calls fn for each complete line (without
// its line ending) and returns the incomplete rest.
func splitLines(buf, p []byte, fn func([]byte)) []byte {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxTranscriptLine - len(buf)
			if room > 0 {
				buf = append(buf, p[:min(room, len(p))]...)
			}
			return buf
		}
		if len(buf) == 0 {
			fn(bytes.TrimSuffix(p[:i], []byte("\r")))
		} else {
			buf = append(buf, p[:min(i, max(0, maxTranscriptLine-len(buf)))]...)
			fn(bytes.TrimSuffix(buf, []byte("\r")))
			buf = buf[:0]
		}
		p = p[i+1:]
	}
	return buf
}

func (t *transcript) clientLine(line []byte) {
	if t.inData {
		if string(line) == "." {
			t.inData = false
			t.sink.line(t.session, "C", fmt.Sprintf("[%d bytes of message data]", t.dataBytes))
			t.sink.line(t.session, "C", ".")
			return
		}
		t.dataBytes += int64(len(line)) + 2
		return
	}
	text := string(line)
	if t.secret {
		fields := strings.Fields(text)
		if len(fields) > 0 && strings.EqualFold(fields[0], "AUTH") {
			text = "AUTH"
			if len(fields) > 1 {
				text += " " + fields[1]
			}
			if len(fields) > 2 {
				text += " [redacted]"
			}
		} else {
			text = "[redacted]"
		}
	}
	if f := strings.Fields(text); !t.secret && len(f) >= 2 && strings.EqualFold(f[0], "BDAT") {
		if n, err := strconv.ParseInt(f[1], 10, 64); err == nil && n > 0 {
			t.chunk, t.dataBytes = n, 0
		}
	}
	t.sink.line(t.session, "C", clip(text))
}

func (t *transcript) serverLine(line []byte) {
	t.sink.line(t.session, "S", clip(string(line)))
}

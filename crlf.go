package mailer

import (
	"bytes"
	"io"
)

// crlfWriter turns every bare CR and bare LF in the message data into CRLF
// before it reaches go-smtp's dot-stuffing writer, which passes a bare CR
// through. Without it "\r.\r\n" inside a message could end the DATA early
// on a lenient server and smuggle a second message (SMTP smuggling).
type crlfWriter struct {
	w  io.Writer
	cr bool // the previous chunk ended with a CR not yet written
}

var crlf = []byte("\r\n")

func newCRLFWriter(w io.Writer) *crlfWriter {
	return &crlfWriter{w: w}
}

// Write passes runs of well-formed lines through in one call and writes a
// CRLF in place of each bare CR or LF; it copies nothing.
func (c *crlfWriter) Write(p []byte) (int, error) {
	rest := p
	for len(rest) > 0 {
		if c.cr {
			c.cr = false
			if _, err := c.w.Write(crlf); err != nil {
				return 0, err
			}
			if rest[0] == '\n' {
				rest = rest[1:]
				continue
			}
		}
		good := wellFormed(rest)
		if good > 0 {
			if _, err := c.w.Write(rest[:good]); err != nil {
				return 0, err
			}
			rest = rest[good:]
		}
		if len(rest) == 0 {
			break
		}
		// rest starts with a bare LF, or a CR whose LF may come next.
		if rest[0] == '\r' {
			c.cr = true
		} else if _, err := c.w.Write(crlf); err != nil {
			return 0, err
		}
		rest = rest[1:]
	}
	return len(p), nil
}

// wellFormed returns the length of the longest prefix of p in which every
// CR is followed by LF and every LF preceded by CR.
func wellFormed(p []byte) int {
	i := 0
	for {
		k := bytes.IndexAny(p[i:], "\r\n")
		if k < 0 {
			return len(p)
		}
		k += i
		if p[k] == '\r' && k+1 < len(p) && p[k+1] == '\n' {
			i = k + 2
			continue
		}
		return k
	}
}

// Close writes a CR still pending at the end as CRLF. It does not close
// the underlying writer.
func (c *crlfWriter) Close() error {
	if !c.cr {
		return nil
	}
	c.cr = false
	_, err := c.w.Write(crlf)
	return err
}

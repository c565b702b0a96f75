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
	w   io.Writer
	cr  bool // the previous byte was a CR not yet written
	buf []byte
}

func newCRLFWriter(w io.Writer) *crlfWriter {
	return &crlfWriter{w: w}
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	rest := p
	for len(rest) > 0 {
		if c.cr {
			c.buf = append(c.buf, '\r', '\n')
			c.cr = false
			if rest[0] == '\n' {
				rest = rest[1:]
				continue
			}
		}
		i := bytes.IndexAny(rest, "\r\n")
		if i < 0 {
			c.buf = append(c.buf, rest...)
			break
		}
		c.buf = append(c.buf, rest[:i]...)
		if rest[i] == '\r' {
			c.cr = true
		} else {
			c.buf = append(c.buf, '\r', '\n')
		}
		rest = rest[i+1:]
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes a CR still pending at the end as CRLF. It does not close
// the underlying writer.
func (c *crlfWriter) Close() error {
	if !c.cr {
		return nil
	}
	c.cr = false
	_, err := c.w.Write([]byte("\r\n"))
	return err
}

package mailer

import "io"

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
	for _, b := range p {
		switch {
		case c.cr && b == '\n':
			c.buf = append(c.buf, '\r', '\n')
			c.cr = false
			continue
		case c.cr:
			c.buf = append(c.buf, '\r', '\n')
			c.cr = false
		}
		switch b {
		case '\r':
			c.cr = true
		case '\n':
			c.buf = append(c.buf, '\r', '\n')
		default:
			c.buf = append(c.buf, b)
		}
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

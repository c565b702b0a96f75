package mailer

import (
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// part is one MIME entity of a message: a leaf with a body, or a
// multipart with children.
type part struct {
	header [][2]string // content fields, in order
	body   func(io.Writer) error
	parts  []*part
}

func textPart(subtype, text string) *part {
	return &part{
		header: [][2]string{
			{"Content-Type", mime.FormatMediaType("text/"+subtype, map[string]string{"charset": "utf-8"})},
			{"Content-Transfer-Encoding", "quoted-printable"},
		},
		body: func(w io.Writer) error {
			_, err := io.WriteString(w, text)
			return err
		},
	}
}

// multipart makes a multipart entity whose boundary is seed and a number,
// so that the same prepared message renders the same bytes every time.
func multipart(seed string, n *int, subtype string, parts ...*part) *part {
	*n++
	ct := mime.FormatMediaType("multipart/"+subtype, map[string]string{"boundary": fmt.Sprintf("=_%s_%d", seed, *n)})
	return &part{header: [][2]string{{"Content-Type", ct}}, parts: parts}
}

func attachmentPart(a *Attachment) *part {
	disposition := "attachment"
	if a.ContentID != "" {
		disposition = "inline"
	}
	mt, params, err := mime.ParseMediaType(a.mediaType())
	if err != nil {
		mt, params = "application/octet-stream", map[string]string{}
	}
	params["name"] = a.Filename
	h := [][2]string{
		{"Content-Type", mime.FormatMediaType(mt, params)},
		// FormatMediaType writes a non-ASCII filename as RFC 2231
		// (filename*=utf-8''...), which Go's and Python's parsers read.
		{"Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": a.Filename})},
		{"Content-Transfer-Encoding", "base64"},
	}
	if a.ContentID != "" {
		h = append(h, [2]string{"Content-ID", "<" + a.ContentID + ">"})
	}
	return &part{header: h, body: func(w io.Writer) error {
		rc, err := a.open()
		if err != nil {
			return err
		}
		defer rc.Close()
		if _, err := io.Copy(w, rc); err != nil {
			return fmt.Errorf("mailer: reading attachment %q: %w", a.Filename, err)
		}
		return nil
	}}
}

// structure builds only the MIME structure the content needs: a single
// part, multipart/alternative for text and HTML, multipart/related for
// HTML with inline images, multipart/mixed for attachments.
func (m *Message) structure(seed string) *part {
	n := 0
	var inline, regular []*Attachment
	for _, a := range m.attachments {
		if a.ContentID != "" && m.HTML != "" {
			inline = append(inline, a)
		} else {
			regular = append(regular, a)
		}
	}
	var body *part
	if m.HTML != "" {
		body = textPart("html", m.HTML)
		if len(inline) > 0 {
			parts := []*part{body}
			for _, a := range inline {
				parts = append(parts, attachmentPart(a))
			}
			body = multipart(seed, &n, "related", parts...)
		}
	}
	if m.Text != "" || body == nil && len(regular) == 0 {
		text := textPart("plain", m.Text)
		if body == nil {
			body = text
		} else {
			body = multipart(seed, &n, "alternative", text, body)
		}
	}
	if len(regular) == 0 {
		return body
	}
	var parts []*part
	if body != nil {
		parts = append(parts, body)
	}
	for _, a := range regular {
		parts = append(parts, attachmentPart(a))
	}
	return multipart(seed, &n, "mixed", parts...)
}

// headerFields returns the message's header fields in conventional order.
func (p *prepared) headerFields() ([][2]string, error) {
	m := p.msg
	var f [][2]string
	add := func(k, v string) { f = append(f, [2]string{k, v}) }
	addrs := func(k string, rs ...Recipient) error {
		if len(rs) == 0 {
			return nil
		}
		out := make([]string, len(rs))
		for i, r := range rs {
			a := r.Address
			if !p.smtputf8 {
				var err error
				if a, err = asciiAddress(a); err != nil {
					return err
				}
			}
			out[i] = Recipient{Name: r.Name, Address: a}.String()
		}
		add(k, strings.Join(out, ", "))
		return nil
	}
	add("Date", p.date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	if err := addrs("From", m.From); err != nil {
		return nil, err
	}
	if m.Sender.Address != "" {
		if err := addrs("Sender", m.Sender); err != nil {
			return nil, err
		}
	}
	for _, a := range []struct {
		k  string
		rs []Recipient
	}{{"Reply-To", m.ReplyTo}, {"To", m.To}, {"Cc", m.Cc}} {
		if err := addrs(a.k, a.rs...); err != nil {
			return nil, err
		}
	}
	add("Subject", encodeWord(m.Subject))
	add("Message-ID", "<"+p.messageID+">")
	if m.InReplyTo != "" {
		add("In-Reply-To", "<"+m.InReplyTo+">")
	}
	if len(m.References) > 0 {
		add("References", "<"+strings.Join(m.References, "> <")+">")
	}
	switch m.Priority {
	case PriorityHigh:
		add("X-Priority", "1 (Highest)")
		add("Importance", "high")
	case PriorityLow:
		add("X-Priority", "5 (Lowest)")
		add("Importance", "low")
	}
	if len(m.ListUnsubscribe) > 0 {
		add("List-Unsubscribe", "<"+strings.Join(m.ListUnsubscribe, ">, <")+">")
		if m.ListUnsubscribeOneClick {
			add("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
		}
	}
	for _, h := range m.Headers {
		add(h.Name, encodeWord(h.Value))
	}
	add("MIME-Version", "1.0")
	return f, nil
}

// encodeWord returns s, RFC 2047 encoded if it is not ASCII, has a word
// too long to fold, or holds "=?" that a reader would take for an encoded
// word. The words are kept short, so that the header can be folded between them near 78
// characters (mime's encoder makes words of up to 75 and leaves ASCII runs
// unencoded, which cannot be split into words). Only letters, digits and
// "!*+-/" stay as they are, which RFC 2047 5(3) allows even in a display
// name.
func encodeWord(s string) string {
	if isASCII(s) && !hasLongWord(s) && !strings.Contains(s, "=?") {
		return s
	}
	return qEncode(s)
}

// hasLongWord reports whether s has a run without white space too long to
// fit on a folded header line; go-message would split it by inserting a
// space, which changes the value.
func hasLongWord(s string) bool {
	for _, w := range strings.Fields(s) {
		if len(w) > 70 {
			return true
		}
	}
	return false
}

// qEncode encodes s as RFC 2047 Q encoded words of bounded length.
func qEncode(s string) string {
	const budget = 45 // encoded bytes per word, besides "=?utf-8?q?" and "?="
	var b strings.Builder
	size := 0
	b.WriteString("=?utf-8?q?")
	for _, r := range s {
		var enc string
		switch {
		case r == ' ':
			enc = "_"
		case r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!*+-/", r)):
			enc = string(r)
		default:
			var buf [utf8.UTFMax]byte
			for _, c := range buf[:utf8.EncodeRune(buf[:], r)] {
				enc += fmt.Sprintf("=%02X", c)
			}
		}
		if size+len(enc) > budget {
			b.WriteString("?= =?utf-8?q?")
			size = 0
		}
		b.WriteString(enc)
		size += len(enc)
	}
	b.WriteString("?=")
	return b.String()
}

// newHeader makes a go-message header with fields in the given order
// (go-message writes fields in the reverse order of Add).
func newHeader(fields [][2]string) message.Header {
	var h message.Header
	for i := len(fields) - 1; i >= 0; i-- {
		h.Add(fields[i][0], fields[i][1])
	}
	return h
}

// writeTo renders the message; each call writes the same bytes. Every
// header is checked before the first byte is written, so that a field that
// must not reach the wire leaves nothing half written.
func (p *prepared) writeTo(w io.Writer) (int64, error) {
	fields, err := p.headerFields()
	if err != nil {
		return 0, err
	}
	root := p.msg.structure(p.boundary)
	fields = append(fields, root.header...)
	if err := checkFields(fields); err != nil {
		return 0, err
	}
	if err := root.check(); err != nil {
		return 0, err
	}
	cw := &countWriter{w: w}
	mw, err := message.CreateWriter(cw, newHeader(fields))
	if err != nil {
		return cw.n, fmt.Errorf("mailer: rendering: %w", err)
	}
	err = root.write(mw)
	return cw.n, err
}

// check runs checkFields on the headers of pt's descendants.
func (pt *part) check() error {
	for _, c := range pt.parts {
		if err := checkFields(c.header); err != nil {
			return err
		}
		if err := c.check(); err != nil {
			return err
		}
	}
	return nil
}

// checkFields reports a field with a control character other than TAB,
// which go-message would write, or one go-message refuses: its CreatePart
// drops that error and writes the part's header without the blank line
// that ends it.
func checkFields(fields [][2]string) error {
	for _, f := range fields {
		if strings.ContainsAny(f[1], "\r\n\x00") {
			return fmt.Errorf("%w: rendering %s: %s", ErrHeaderInjection, quoteCut(f[0]), quoteCut(f[1]))
		}
		if strings.IndexFunc(f[1], func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) >= 0 {
			return fmt.Errorf("mailer: rendering %s: %s has a control character", quoteCut(f[0]), quoteCut(f[1]))
		}
	}
	if _, err := message.CreateWriter(io.Discard, newHeader(fields)); err != nil {
		return fmt.Errorf("mailer: rendering: %w", err)
	}
	return nil
}

func (pt *part) write(w *message.Writer) error {
	if pt.parts == nil {
		if err := pt.body(w); err != nil {
			return err
		}
		return w.Close()
	}
	for _, c := range pt.parts {
		cw, err := w.CreatePart(newHeader(c.header))
		if err != nil {
			return fmt.Errorf("mailer: rendering: %w", err)
		}
		if err := c.write(cw); err != nil {
			return err
		}
	}
	return w.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

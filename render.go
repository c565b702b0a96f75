package mailer

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	gmtextproto "github.com/emersion/go-message/textproto"
)

// part is one MIME entity of a message: a text leaf, an attachment leaf
// or a multipart with children.
type part struct {
	header   [][2]string // content fields, in order
	text     string      // a text leaf's body
	att      *Attachment // an attachment leaf's body
	boundary string      // a multipart's boundary
	parts    []*part
}

// The fields of the text parts, shared by every rendering.
var (
	plainHeader = [][2]string{{"Content-Type", "text/plain; charset=utf-8"}, {"Content-Transfer-Encoding", "quoted-printable"}}
	htmlHeader  = [][2]string{{"Content-Type", "text/html; charset=utf-8"}, {"Content-Transfer-Encoding", "quoted-printable"}}
)

// multipart makes a multipart entity whose boundary is seed and a number,
// so that the same prepared message renders the same bytes every time.
func multipart(seed string, n *int, subtype string, parts ...*part) *part {
	*n++
	b := "=_" + seed + "_" + strconv.Itoa(*n)
	// The boundary is '=', '_' and hex digits: mime.FormatMediaType would
	// quote it the same way, for the '='.
	ct := "multipart/" + subtype + `; boundary="` + b + `"`
	return &part{header: [][2]string{{"Content-Type", ct}}, boundary: b, parts: parts}
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
	return &part{header: h, att: a}
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
		body = &part{header: htmlHeader, text: m.HTML}
		if len(inline) > 0 {
			parts := []*part{body}
			for _, a := range inline {
				parts = append(parts, attachmentPart(a))
			}
			body = multipart(seed, &n, "related", parts...)
		}
	}
	var invite *part
	if m.Calendar != nil {
		invite = calendarPart(m.Calendar)
		regular = append(regular, m.Calendar.attachment())
	}
	if m.Text != "" || body == nil && len(regular) == 0 {
		text := &part{header: plainHeader, text: m.Text}
		if body == nil {
			body = text
		} else {
			body = multipart(seed, &n, "alternative", text, body)
		}
	}
	if invite != nil {
		switch {
		case body == nil:
			body = invite
		case body.boundary != "" && strings.HasPrefix(body.header[0][1], "multipart/alternative"):
			body.parts = append(body.parts, invite)
		default:
			body = multipart(seed, &n, "alternative", body, invite)
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
		if h.Raw {
			add(rawMark+h.Name, h.Value)
			continue
		}
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

// writeTo renders the message; each call writes the same bytes. Every
// header is checked before the first byte is written, so that a field that
// must not reach the wire leaves nothing half written. The output goes to w
// through a pooled buffer, which an error leaves unwritten.
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
	r := renderers.Get().(*renderer)
	defer r.release()
	r.cw.w = w
	err = r.writeHeader(fields)
	if err == nil {
		err = r.write(root)
	}
	if err == nil {
		err = r.bw.Flush()
	}
	return r.cw.n, err
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

// checkFields reports a field that go-message's header writer would refuse
// (a name that is not RFC 5322 field-name syntax, a CR or LF in the value)
// or write although it must not reach the wire (NUL, another control
// character other than TAB).
func checkFields(fields [][2]string) error {
	for _, f := range fields {
		if name, ok := strings.CutPrefix(f[0], rawMark); ok {
			// Checked by checkRawValue, folding included.
			if err := checkRawValue(name, f[1]); err != nil {
				return err
			}
			continue
		}
		if strings.ContainsAny(f[1], "\r\n\x00") {
			return fmt.Errorf("%w: rendering %s: %s", ErrHeaderInjection, quoteCut(f[0]), quoteCut(f[1]))
		}
		if strings.IndexFunc(f[1], func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) >= 0 {
			return fmt.Errorf("mailer: rendering %s: %s has a control character", quoteCut(f[0]), quoteCut(f[1]))
		}
		if f[0] == "" || strings.IndexFunc(f[0], func(c rune) bool { return c < '!' || c > '~' || c == ':' }) >= 0 {
			return fmt.Errorf("%w: rendering field name %s", ErrHeaderInjection, quoteCut(f[0]))
		}
	}
	return nil
}

// rawMark starts the name of a field whose value is written as given
// (Header.Raw): no field name can hold a NUL, so it cannot be confused with
// one.
const rawMark = "\x00"

// foldLen is the line length past which go-message folds a header field,
// under RFC 5322 2.1.1's 78 characters.
const foldLen = 76

// writeHeader writes the fields in order and the blank line that ends a
// header, as go-message's textproto.WriteHeader does. A field that fits on
// a line is written here: go-message would write its canonical name, ": ",
// the value and CRLF, but only after building a map-based Header for it,
// which took a third of the rendering time. go-message folds the others.
func (r *renderer) writeHeader(fields [][2]string) error {
	for _, f := range fields {
		if name, ok := strings.CutPrefix(f[0], rawMark); ok {
			r.bw.WriteString(name)
			r.bw.WriteString(": ")
			r.bw.WriteString(f[1])
			r.bw.WriteString("\r\n")
			continue
		}
		if len(f[0])+len(": ")+len(f[1]) > foldLen {
			var h gmtextproto.Header
			h.Add(f[0], f[1])
			raw, err := h.Raw(f[0])
			if err != nil {
				return fmt.Errorf("mailer: rendering: %w", err)
			}
			r.bw.Write(raw)
			continue
		}
		r.bw.WriteString(textproto.CanonicalMIMEHeaderKey(f[0]))
		r.bw.WriteString(": ")
		r.bw.WriteString(f[1])
		r.bw.WriteString("\r\n")
	}
	_, err := r.bw.WriteString("\r\n")
	return err
}

// renderer holds the buffers of one rendering; they are pooled, so that
// rendering a message allocates none.
type renderer struct {
	cw  countWriter
	bw  *bufio.Writer // writes to cw
	in  [57 * 64]byte // input of whole base64 lines, or text for the QP encoder
	out [78 * 64]byte // those lines encoded, each with CRLF
}

var renderers = sync.Pool{New: func() any {
	r := new(renderer)
	r.bw = bufio.NewWriterSize(&r.cw, 4096)
	return r
}}

// release returns r to the pool, keeping no reference to the destination.
func (r *renderer) release() {
	r.cw = countWriter{}
	r.bw.Reset(&r.cw)
	renderers.Put(r)
}

// write writes the body of pt: its children with the delimiters of its
// boundary (RFC 2046 5.1.1), else its encoded content. The delimiters are
// written here rather than by go-message's multipart writer, which makes a
// random boundary only to be replaced and formats every delimiter with fmt.
func (r *renderer) write(pt *part) error {
	switch {
	case pt.parts != nil:
		for i, c := range pt.parts {
			if i > 0 {
				r.bw.WriteString("\r\n")
			}
			r.bw.WriteString("--")
			r.bw.WriteString(pt.boundary)
			r.bw.WriteString("\r\n")
			if err := r.writeHeader(c.header); err != nil {
				return err
			}
			if err := r.write(c); err != nil {
				return err
			}
		}
		r.bw.WriteString("\r\n--")
		r.bw.WriteString(pt.boundary)
		_, err := r.bw.WriteString("--\r\n")
		return err
	case pt.att != nil:
		return r.base64(pt.att)
	default:
		return r.quotedPrintable(pt.text)
	}
}

// quotedPrintable writes s with the standard library's quoted-printable
// encoder, through r.in, since it has no WriteString. The encoder is not
// pooled: it has no Reset, and keeps a final CR's state past Close.
func (r *renderer) quotedPrintable(s string) error {
	qp := quotedprintable.NewWriter(r.bw)
	for len(s) > 0 {
		n := copy(r.in[:], s)
		if _, err := qp.Write(r.in[:n]); err != nil {
			return err
		}
		s = s[n:]
	}
	return qp.Close()
}

// base64 streams the attachment's body base64 encoded in lines of 76
// characters (RFC 2045 6.8), a chunk of whole lines at a time: unlike
// base64.NewEncoder behind go-message's line wrapper, which scans every
// encoded byte for a line end, it knows where the lines end. Like that
// writer it ends the last line without a CRLF: the delimiter that
// follows starts with one.
func (r *renderer) base64(a *Attachment) error {
	rc, err := a.open()
	if err != nil {
		return err
	}
	defer rc.Close()
	first := true
	for {
		n, err := io.ReadFull(rc, r.in[:])
		out := r.out[:0]
		for line := r.in[:n]; len(line) > 0; {
			if !first {
				out = append(out, '\r', '\n')
			}
			first = false
			k := min(len(line), 57)
			out = base64.StdEncoding.AppendEncode(out, line[:k])
			line = line[k:]
		}
		if _, werr := r.bw.Write(out); werr != nil {
			return werr
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return nil
		default:
			return fmt.Errorf("mailer: reading attachment %q: %w", a.Filename, err)
		}
	}
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

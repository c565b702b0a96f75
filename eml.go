package mailer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/charset"
)

// maxEMLHeader bounds the header SendEML reads to find the envelope.
const maxEMLHeader = 1 << 20

// SendEML sends a complete RFC 5322 message read from r (an .eml file, a
// message another system built) to the recipients its header names, as
// Python's smtplib send_message does: MAIL FROM is Sender, else From; the
// recipients are those of To, Cc and Bcc. When the message was resent
// (Resent-* fields), the topmost resent block's Resent-Sender or
// Resent-From and Resent-To, Resent-Cc and Resent-Bcc are used instead. Bcc
// and Resent-Bcc are removed from what is sent; the rest goes as it is
// (line ends normalised to CRLF, DKIM-signed with WithDKIM), and the
// result carries the message's Message-ID. A header that does not parse,
// has no sender or no recipient, or is larger than 1 MiB is an error
// before anything is sent. With WithRetry, the message is sent again after
// being read only if r is an io.Seeker.
func (c *Connection) SendEML(ctx context.Context, r io.Reader) (*SendResult, error) {
	start := int64(-1)
	if sk, ok := r.(io.Seeker); ok {
		if pos, err := sk.Seek(0, io.SeekCurrent); err == nil {
			start = pos
		}
	}
	br := bufio.NewReader(r)
	fields, consumed, err := readEMLHeader(br)
	if err != nil {
		return nil, err
	}
	env, id, err := emlEnvelope(fields)
	if err != nil {
		return nil, err
	}
	var head bytes.Buffer
	for _, f := range fields {
		if name := strings.ToLower(f.name); name != "bcc" && name != "resent-bcc" {
			head.Write(f.raw)
		}
	}
	head.WriteString("\r\n")
	src := &emlReader{head: head.Bytes(), br: br}
	src.rewind()
	var body io.Reader = src
	if start >= 0 {
		src.seeker, src.bodyAt = r.(io.Seeker), start+consumed
		body = seekableEML{src}
	}
	res, err := c.SendRaw(ctx, env, body)
	if res != nil {
		res.MessageID = id
	}
	return res, err
}

// emlField is one header field: its name and its raw lines, CRLF-ended.
type emlField struct {
	name string
	raw  []byte
}

// value returns the field's unfolded value.
func (f emlField) value() string {
	v := string(f.raw[len(f.name)+1:])
	v = strings.ReplaceAll(v, "\r\n", "")
	return strings.TrimSpace(v)
}

// readEMLHeader reads the header up to the blank line (or the end of r),
// with line ends normalised to CRLF; consumed is the number of bytes read
// from br, the blank line included.
func readEMLHeader(br *bufio.Reader) (fields []emlField, consumed int64, err error) {
	var size int
	var long []byte // a line longer than br's buffer, gathered
	for {
		line, err := br.ReadSlice('\n')
		consumed += int64(len(line))
		size += len(line)
		if size > maxEMLHeader {
			return nil, 0, fmt.Errorf("mailer: SendEML: the header is longer than %d bytes", maxEMLHeader)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line, long = append(long, line...), nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, &readerError{err}
		}
		text := strings.TrimRight(string(line), "\r\n")
		switch {
		case text == "" && (len(line) > 0 || err != nil):
			if len(fields) == 0 {
				return nil, 0, errors.New("mailer: SendEML: the message has no header")
			}
			return fields, consumed, nil
		case strings.ContainsAny(text, "\r\x00"):
			return nil, 0, fmt.Errorf("%w: SendEML: a header line holds a bare CR or a NUL", ErrHeaderInjection)
		case text[0] == ' ' || text[0] == '\t':
			if len(fields) == 0 {
				return nil, 0, errors.New("mailer: SendEML: the header starts with a continuation line")
			}
			f := &fields[len(fields)-1]
			f.raw = append(append(f.raw, text...), "\r\n"...)
		default:
			name, _, ok := strings.Cut(text, ":")
			if !ok || name == "" || strings.IndexFunc(name, func(c rune) bool { return c < '!' || c > '~' }) >= 0 {
				return nil, 0, fmt.Errorf("mailer: SendEML: %s is not a header field", quoteCut(text))
			}
			fields = append(fields, emlField{name: name, raw: []byte(text + "\r\n")})
		}
		if err != nil {
			return fields, consumed, nil
		}
	}
}

// emlEnvelope derives the envelope and the Message-ID from the header
// fields, by the rule in SendEML's documentation.
func emlEnvelope(fields []emlField) (Envelope, string, error) {
	// A resent message carries a block of Resent-* fields for each
	// resending, the newest on top (RFC 5322 3.6.6): the topmost block is
	// the first run of Resent-* fields, up to another field or a Resent-*
	// name seen already in the run.
	prefix := ""
	var block []emlField
	for i, f := range fields {
		if !strings.HasPrefix(strings.ToLower(f.name), "resent-") {
			continue
		}
		prefix = "resent-"
		seen := map[string]bool{}
		for _, g := range fields[i:] {
			name := strings.ToLower(g.name)
			if !strings.HasPrefix(name, "resent-") || seen[name] {
				break
			}
			seen[name] = true
			block = append(block, g)
		}
		break
	}
	get := func(name string) []emlField {
		from := fields
		if prefix != "" {
			from = block
		}
		var out []emlField
		for _, f := range from {
			if strings.ToLower(f.name) == prefix+name {
				out = append(out, f)
			}
		}
		return out
	}
	dec := &mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: charset.Reader}}
	parse := func(f emlField) ([]*mail.Address, error) {
		v := f.value()
		if v == "" || strings.HasSuffix(v, ":;") && !strings.Contains(v, "@") {
			return nil, nil // empty, or an empty group ("undisclosed-recipients:;")
		}
		list, err := dec.ParseList(v)
		if err != nil {
			return nil, fmt.Errorf("%w: SendEML: %s: %s: %v", ErrInvalidAddress, f.name, quoteCut(v), err)
		}
		return list, nil
	}
	var env Envelope
	for _, name := range []string{"sender", "from"} {
		fs := get(name)
		if len(fs) == 0 {
			continue
		}
		list, err := parse(fs[0])
		if err != nil {
			return env, "", err
		}
		if len(list) > 0 {
			env.From = list[0].Address
			break
		}
	}
	if env.From == "" {
		return env, "", fmt.Errorf("%w: SendEML: no %sFrom or %sSender address", ErrInvalidAddress, prefix, prefix)
	}
	seen := map[string]bool{}
	for _, name := range []string{"to", "cc", "bcc"} {
		for _, f := range get(name) {
			list, err := parse(f)
			if err != nil {
				return env, "", err
			}
			for _, a := range list {
				if key := foldAddress(a.Address); !seen[key] {
					seen[key] = true
					env.To = append(env.To, a.Address)
				}
			}
		}
	}
	if err := checkEnvelope(env); err != nil {
		return env, "", err
	}
	id := ""
	for _, f := range fields {
		if strings.EqualFold(f.name, "Message-ID") {
			id = strings.Trim(f.value(), "<>")
			break
		}
	}
	return env, id, nil
}

// emlReader gives the rewritten header and then the rest of the message.
type emlReader struct {
	head   []byte
	br     *bufio.Reader
	r      io.Reader
	seeker io.Seeker // the caller's reader, when it can seek
	bodyAt int64     // where the body starts in it
}

func (e *emlReader) Read(p []byte) (int, error) { return e.r.Read(p) }

// rewind starts the message again: the header, then the body from where
// the caller's reader is.
func (e *emlReader) rewind() {
	e.r = io.MultiReader(bytes.NewReader(e.head), e.br)
}

// seekableEML lets SendRaw read the message again (for DKIM, or a retry)
// when the caller's reader can seek: Seek supports only going back to the
// start.
type seekableEML struct{ *emlReader }

func (s seekableEML) Seek(offset int64, whence int) (int64, error) {
	switch {
	case offset == 0 && whence == io.SeekCurrent:
		return 0, nil
	case offset == 0 && whence == io.SeekStart:
		if _, err := s.seeker.Seek(s.bodyAt, io.SeekStart); err != nil {
			return 0, err
		}
		s.br.Reset(s.seeker.(io.Reader))
		s.rewind()
		return 0, nil
	}
	return 0, errors.New("mailer: SendEML: the message can only be read again from its start")
}

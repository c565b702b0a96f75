package mailer

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/gomailer/mailer/mailertest"
)

// fullMessage uses every feature of Message.
func fullMessage(t testing.TB) *Message {
	m := &Message{
		From:       Recipient{Name: "Müflone Ñandú", Address: "muflone@example.com"},
		Sender:     Recipient{Name: "Bulk", Address: "bulk@example.com"},
		ReplyTo:    []Recipient{{Name: "Desk", Address: "desk@example.com"}, {Address: "alt@example.com"}},
		To:         []Recipient{{Name: "Foo, Jr.", Address: "foo@example.com"}, {Name: "日本 語", Address: "ja@example.jp"}},
		Cc:         []Recipient{{Address: "bar@example.com"}},
		Bcc:        []Recipient{{Name: "Secret", Address: "hidden@example.com"}},
		Subject:    "Grüße aus Köln — ünïcödé, a long subject that must be folded somewhere near 78 columns",
		Text:       "Hello wörld!\nSecond line.\n.a line that starts with a dot\n",
		HTML:       `<p>Hello <b>wörld</b> <img src="cid:logo@example"></p>`,
		Date:       time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		MessageID:  "fixed-id@example.com",
		InReplyTo:  "parent@example.com",
		References: []string{"root@example.com", "parent@example.com"},
		Priority:   PriorityHigh,
		Headers:    []Header{{Name: "X-Campaign", Value: "spring-2026"}, {Name: "X-Note", Value: "café"}},

		ListUnsubscribe:         []string{"https://example.com/u/1", "mailto:unsub@example.com"},
		ListUnsubscribeOneClick: true,
	}
	m.AttachBytes("résumé €.pdf", []byte("%PDF-1.4 not really\x00\x01\x02"))
	m.AttachBytes("data.bin", bytes.Repeat([]byte{0, 255, 10, 13}, 1000))
	m.AttachBytes("logo.png", []byte("\x89PNG\r\n\x1a\n fake")).ContentID = "logo@example"
	return m
}

func render(t testing.TB, m *Message) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := m.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) {
		t.Errorf("WriteTo returned %d, wrote %d", n, b.Len())
	}
	return b.Bytes()
}

func TestRenderRoundTripGoMessage(t *testing.T) {
	m := fullMessage(t)
	raw := render(t, m)
	for i, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 998 || strings.ContainsAny(line, "\r\n") {
			t.Fatalf("line %d: %d octets or bare CR/LF", i, len(line))
		}
	}
	if bytes.Contains(raw, []byte("hidden@example.com")) || bytes.Contains(raw, []byte("Secret")) {
		t.Error("Bcc in the rendered message")
	}
	r, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header
	if s, _ := h.Subject(); s != m.Subject {
		t.Errorf("Subject = %q", s)
	}
	from, _ := h.AddressList("From")
	to, _ := h.AddressList("To")
	rt, _ := h.AddressList("Reply-To")
	if len(from) != 1 || from[0].Name != m.From.Name || from[0].Address != m.From.Address {
		t.Errorf("From = %v", from)
	}
	if len(to) != 2 || to[0].Name != "Foo, Jr." || to[1].Name != "日本 語" || len(rt) != 2 {
		t.Errorf("To = %v, Reply-To = %v", to, rt)
	}
	if id, _ := h.MessageID(); id != "fixed-id@example.com" {
		t.Errorf("Message-ID = %q", id)
	}
	if refs, _ := h.MsgIDList("References"); len(refs) != 2 || refs[1] != "parent@example.com" {
		t.Errorf("References = %v", refs)
	}
	if d, _ := h.Date(); !d.Equal(m.Date) {
		t.Errorf("Date = %v", d)
	}
	for k, want := range map[string]string{"X-Priority": "1 (Highest)", "Importance": "high",
		"List-Unsubscribe":      "<https://example.com/u/1>, <mailto:unsub@example.com>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Campaign": "spring-2026"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if note, _ := h.Text("X-Note"); note != "café" {
		t.Errorf("X-Note = %q", note)
	}
	var text, html string
	files := map[string][]byte{}
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(p.Body)
		switch ph := p.Header.(type) {
		case *mail.InlineHeader:
			ct, _, _ := ph.ContentType()
			switch {
			case ct == "text/plain":
				text = string(body)
			case ct == "text/html":
				html = string(body)
			default:
				files["inline:"+ph.Get("Content-Id")] = body
			}
		case *mail.AttachmentHeader:
			name, _ := ph.Filename()
			files[name] = body
		}
	}
	if text != strings.ReplaceAll(m.Text, "\n", "\r\n") || html != m.HTML {
		t.Errorf("text %q html %q", text, html)
	}
	if string(files["résumé €.pdf"]) != "%PDF-1.4 not really\x00\x01\x02" || len(files["data.bin"]) != 4000 ||
		!bytes.HasPrefix(files["inline:<logo@example>"], []byte("\x89PNG")) {
		t.Errorf("attachments: %d files: %q", len(files), keys(files))
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func TestPreparedIsStable(t *testing.T) {
	p, err := fullMessage(t).prepare(false, stamp{})
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if _, err := p.writeTo(&a); err != nil {
		t.Fatal(err)
	}
	p.writeTo(&b)
	ha, _, _ := strings.Cut(a.String(), "\r\n\r\n")
	hb, _, _ := strings.Cut(b.String(), "\r\n\r\n")
	if ha != hb {
		t.Errorf("headers differ between two writes:\n%s\n%s", ha, hb)
	}
}

func TestStructure(t *testing.T) {
	ctOf := func(m *Message) string {
		raw := render(t, m)
		r, err := mail.CreateReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := r.Header.ContentType()
		return ct + " " + strings.Join(partTypes(raw), ",")
	}
	base := func() *Message {
		return &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}}
	}
	m := base()
	m.Text = "t"
	if got := ctOf(m); got != "text/plain " {
		t.Errorf("text only: %s", got)
	}
	m = base()
	m.HTML = "<p>h</p>"
	if got := ctOf(m); got != "text/html " {
		t.Errorf("html only: %s", got)
	}
	m.Text = "t"
	if got := ctOf(m); got != "multipart/alternative text/plain,text/html" {
		t.Errorf("both: %s", got)
	}
	m = base()
	m.AttachBytes("a.txt", []byte("x"))
	if got := ctOf(m); got != "multipart/mixed text/plain" {
		t.Errorf("attachment only: %s", got)
	}
	m = base()
	if got := ctOf(m); got != "text/plain " {
		t.Errorf("empty: %s", got)
	}
	m = base()
	m.HTML = `<img src="cid:x">`
	m.AttachBytes("x.gif", []byte("GIF89a")).ContentID = "x"
	if got := ctOf(m); got != "multipart/related text/html,image/gif" {
		t.Errorf("inline: %s", got)
	}
}

// partTypes lists the leaf content types of a rendered message, in order.
func partTypes(raw []byte) []string {
	var out []string
	_, body, _ := strings.Cut(string(raw), "\r\n\r\n")
	for _, line := range strings.Split(body, "\r\n") {
		if v, ok := strings.CutPrefix(line, "Content-Type: "); ok && !strings.HasPrefix(v, "multipart/") {
			mt, _, _ := mime.ParseMediaType(v)
			out = append(out, mt)
		}
	}
	return out
}

func TestRenderDoesNotMutate(t *testing.T) {
	m := fullMessage(t)
	m.MessageID, m.Date = "", time.Time{}
	render(t, m)
	if m.MessageID != "" || !m.Date.IsZero() {
		t.Error("WriteTo wrote generated values into the Message")
	}
	raw := string(render(t, m))
	if !strings.Contains(raw, "@example.com>\r\n") || strings.Contains(raw, hostname()) {
		t.Errorf("generated Message-ID not at the sender's domain or leaks the host name")
	}
}

func hostname() string {
	h, _ := os.Hostname()
	if h == "" {
		return "\x00no-host"
	}
	return "@" + h + ">"
}

func TestInjectionRefused(t *testing.T) {
	evil := "x\r\nBcc: victim@example.com"
	cases := map[string]func(m *Message){
		"from name":    func(m *Message) { m.From.Name = evil },
		"from address": func(m *Message) { m.From.Address = "a@example.com\r\nX: y" },
		"to name":      func(m *Message) { m.To[0].Name = evil },
		"cc address":   func(m *Message) { m.Cc = []Recipient{{Address: "c@example.com\n"}} },
		"bcc name":     func(m *Message) { m.Bcc = []Recipient{{Name: "\x00", Address: "c@example.com"}} },
		"reply-to":     func(m *Message) { m.ReplyTo = []Recipient{{Name: evil, Address: "r@example.com"}} },
		"sender":       func(m *Message) { m.Sender = Recipient{Name: evil, Address: "s@example.com"} },
		"subject":      func(m *Message) { m.Subject = evil },
		"header name":  func(m *Message) { m.Headers = []Header{{Name: "X-A\r\nBcc", Value: "v"}} },
		"header value": func(m *Message) { m.Headers = []Header{{Name: "X-A", Value: evil}} },
		"header colon": func(m *Message) { m.Headers = []Header{{Name: "X:A", Value: "v"}} },
		"header space": func(m *Message) { m.Headers = []Header{{Name: "X A", Value: "v"}} },
		"message-id":   func(m *Message) { m.MessageID = "a@b\r\nX: y" },
		"in-reply-to":  func(m *Message) { m.InReplyTo = evil },
		"references":   func(m *Message) { m.References = []string{evil} },
		"unsubscribe":  func(m *Message) { m.ListUnsubscribe = []string{evil} },
		"filename":     func(m *Message) { m.AttachBytes("a\r\nb.txt", nil) },
		"content-id":   func(m *Message) { m.AttachBytes("a.png", nil).ContentID = "x\ny" },
		"content-type": func(m *Message) { m.AttachBytes("a.png", nil).ContentType = "image/png\r\nX: y" },
		"envelope": func(m *Message) {
			m.Envelope = &Envelope{From: "a@example.com", To: []string{"b@example.com\r\nRCPT TO:<c@d.e>"}}
		},
		"name with nul":  func(m *Message) { m.To[0].Name = "a\x00b" },
		"raw in address": func(m *Message) { m.To[0].Address = "b@example.com\rX" },
	}
	for name, mutate := range cases {
		m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}, Text: "hi"}
		mutate(m)
		err := m.Validate()
		if !errors.Is(err, ErrHeaderInjection) {
			t.Errorf("%s: Validate = %v, want ErrHeaderInjection", name, err)
		}
		if _, err := m.WriteTo(io.Discard); err == nil {
			t.Errorf("%s: WriteTo rendered it", name)
		}
	}
	m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}},
		Headers: []Header{{Name: "Subject", Value: "again"}}}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "set from the Message") {
		t.Errorf("managed header: %v", err)
	}
}

func TestInvalidInput(t *testing.T) {
	for name, m := range map[string]*Message{
		"no from":       {To: []Recipient{{Address: "b@example.com"}}},
		"no recipients": {From: Recipient{Address: "a@example.com"}},
		"bad address":   {From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "not an address"}}},
		"bracketed id":  {From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}, MessageID: "<x@y>"},
	} {
		if err := m.Validate(); !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var m Message
	if _, err := m.AttachFile(filepath.Join(t.TempDir(), "missing.pdf")); err == nil || !os.IsNotExist(errors.Unwrap(err)) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := m.AttachFile(t.TempDir()); err == nil {
		t.Error("directory attached")
	}
	if _, err := m.AttachFS(fstest.MapFS{}, "nope.txt"); err == nil {
		t.Error("missing fs file attached")
	}
	if len(m.Attachments()) != 0 {
		t.Error("failed attachments were added")
	}
}

func TestAttachmentSources(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report.csv")
	os.WriteFile(path, []byte("a,b\n1,2\n"), 0o644)
	m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}, Text: "see attached"}
	if _, err := m.AttachFile(path); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AttachFS(fstest.MapFS{"dir/notes.md": {Data: []byte("# notes")}}, "dir/notes.md"); err != nil {
		t.Fatal(err)
	}
	m.AttachReader("stream.txt", strings.NewReader("streamed"))
	a := m.AttachBytes("custom.dat", []byte("zz"))
	a.ContentType = "application/x-custom"
	raw := string(render(t, m))
	for _, want := range []string{"text/csv", `filename=report.csv`, "filename=notes.md", "application/x-custom"} {
		if !strings.Contains(raw, want) {
			t.Errorf("rendered message lacks %q", want)
		}
	}
	if _, err := m.WriteTo(io.Discard); err == nil || !strings.Contains(err.Error(), "already read") {
		t.Errorf("second render with a reader attachment: %v", err)
	}
}

func TestEnvelopeAndIDN(t *testing.T) {
	m := &Message{
		From: Recipient{Address: "me@bücher.example"},
		To:   []Recipient{{Address: "a@Example.com"}, {Address: "b@bücher.example"}},
		Cc:   []Recipient{{Address: "a@example.COM"}},
		Bcc:  []Recipient{{Address: "hidden@example.com"}},
		Text: "x",
	}
	p, err := m.prepare(false, stamp{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a@Example.com", "b@xn--bcher-kva.example", "hidden@example.com"}
	if p.envelope.From != "me@xn--bcher-kva.example" || strings.Join(p.envelope.To, " ") != strings.Join(want, " ") || p.utf8 {
		t.Errorf("envelope = %+v utf8=%v", p.envelope, p.utf8)
	}
	var b bytes.Buffer
	p.writeTo(&b)
	if !strings.Contains(b.String(), "From: me@xn--bcher-kva.example\r\n") {
		t.Errorf("header not in punycode:\n%s", b.String())
	}
	if p, _ := m.prepare(true, stamp{}); !p.utf8 || p.envelope.From != "me@bücher.example" {
		t.Errorf("with SMTPUTF8: %+v", p.envelope)
	}
	m.To = append(m.To, Recipient{Address: "jürgen@example.com"})
	if _, err := m.prepare(false, stamp{}); !errors.Is(err, ErrSMTPUTF8Unsupported) {
		t.Errorf("non-ASCII local part without SMTPUTF8: %v", err)
	}
	m.Envelope = &Envelope{From: "bounce@example.com", To: []string{"only@example.com"}}
	if p, _ := m.prepare(true, stamp{}); p.envelope.From != "bounce@example.com" || len(p.envelope.To) != 1 {
		t.Errorf("override: %+v", p.envelope)
	}
}

func TestSendThroughMailertest(t *testing.T) {
	srv := newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithSMTPUTF8())
	c := connect(t, srv)
	m := fullMessage(t)
	m.MessageID = ""
	m.To = append(m.To, Recipient{Name: "Jürgen", Address: "jürgen@example.com"})
	res, err := c.Send(testCtx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ := srv.WaitMessages(testCtx(t), 1)
	got := msgs[0]
	if !strings.Contains(string(got.Data), "Message-Id: <"+res.MessageID+">") || !strings.HasSuffix(res.MessageID, "@example.com") {
		t.Errorf("MessageID %q not in the message", res.MessageID)
	}
	if !got.UTF8 || len(got.To) != 5 || got.To[4] != "hidden@example.com" || bytes.Contains(got.Data, []byte("hidden@")) {
		t.Errorf("envelope %v utf8=%v", got.To, got.UTF8)
	}
	if m.MessageID != "" {
		t.Error("Send wrote the Message-ID into the Message")
	}
	// Without SMTPUTF8 the same message is refused before anything is sent.
	plainSrv := newTestServer(t, mailertest.WithSTARTTLS())
	if _, err := connect(t, plainSrv).Send(testCtx(t), m); !errors.Is(err, ErrSMTPUTF8Unsupported) {
		t.Errorf("err = %v", err)
	}
	if strings.Contains(strings.Join(plainSrv.Commands(), "|"), "MAIL") {
		t.Error("MAIL sent for a message that cannot go")
	}
}

func TestSendOneMessageConcurrently(t *testing.T) {
	srv := newTestServer(t)
	c := connect(t, srv, WithSecurity(SecurityNone), WithMaxConnections(4))
	m := fullMessage(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Send(testCtx(t), m); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if msgs, _ := srv.WaitMessages(testCtx(t), 8); len(msgs) != 8 {
		t.Errorf("%d messages", len(msgs))
	}
}

// TestEveryValueChecked covers values that the check used to skip: it was
// keyed by header name and filename, so a second header or attachment of
// the same name hid the first, and it read the fields of an attachment as
// one string.
func TestEveryValueChecked(t *testing.T) {
	png := []byte("\x89PNG")
	cases := map[string]struct {
		mutate func(m *Message)
		want   error // nil: any error
	}{
		"content-id CRLF, same filename": {func(m *Message) {
			m.AttachBytes("a.png", png).ContentID = "cid\r\nBcc: e@e"
			m.AttachBytes("a.png", png)
		}, ErrHeaderInjection},
		"content-id NUL, same filename": {func(m *Message) {
			m.AttachBytes("a.png", png).ContentID = "c\x00id"
			m.AttachBytes("a.png", png)
		}, ErrHeaderInjection},
		"content-id ESC, same filename": {func(m *Message) {
			m.AttachBytes("a.png", png).ContentID = "c\x1bid"
			m.AttachBytes("a.png", png)
		}, nil},
		"content type ESC, same filename": {func(m *Message) {
			m.AttachBytes("a.png", png).ContentType = "image/png\x1b"
			m.AttachBytes("a.png", png)
		}, nil},
		"header ESC, same name": {func(m *Message) {
			m.Headers = []Header{{Name: "X-A", Value: "a\x1bb"}, {Name: "X-A", Value: "ok"}}
		}, nil},
		"header C1, same name": {func(m *Message) {
			m.Headers = []Header{{Name: "X-A", Value: "a\u009bb"}, {Name: "X-A", Value: "ok"}}
		}, nil},
		"UTF-8 split across filename and type": {func(m *Message) {
			m.AttachBytes("a\xc3", png).ContentType = "\xa9image/png"
		}, nil},
		"content-id with angle brackets": {func(m *Message) {
			m.AttachBytes("a.png", png).ContentID = "a> <b"
		}, ErrInvalidAddress},
		"unsubscribe with angle brackets": {func(m *Message) {
			m.ListUnsubscribe = []string{"https://example.com/u>, <mailto:x@example.com"}
		}, ErrInvalidAddress},
		"name C1": {func(m *Message) { m.To[0].Name = "a\u0085b" }, ErrInvalidAddress},
		// go-message refuses the charset halfway through the message, and
		// writes the body of a multipart type unencoded.
		"charset go-message refuses": {func(m *Message) {
			m.AttachBytes("a.txt", []byte("caf\xe9")).ContentType = "text/plain; charset=iso-8859-1"
		}, nil},
		"multipart attachment": {func(m *Message) {
			m.AttachBytes("a.bin", []byte("\x00\r\n.\r\n")).ContentType = "multipart/mixed; boundary=x"
		}, nil},
	}
	for name, tc := range cases {
		m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}, Text: "hi"}
		tc.mutate(m)
		verr := m.Validate()
		if verr == nil || tc.want != nil && !errors.Is(verr, tc.want) {
			want := "an error"
			if tc.want != nil {
				want = tc.want.Error()
			}
			t.Errorf("%s: Validate = %v, want %s", name, verr, want)
			continue
		}
		var b bytes.Buffer
		if _, err := m.WriteTo(&b); err == nil || b.Len() > 0 {
			t.Errorf("%s: WriteTo = %v after writing %d bytes", name, err, b.Len())
		}
		if _, err := plain(t, "127.0.0.1:1").Send(testCtx(t), m); err == nil || err.Error() != verr.Error() {
			t.Errorf("%s: Send = %v, want %v before dialling", name, err, verr)
		}
	}
}

// FuzzValidate puts one value in each field in turn, next to a second
// header and attachment of the same name: a message that validates must
// render, with nothing but CRLF line ends and TAB below 0x20; one that does
// not must render nothing.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"ok", "café", "a\tb", "x\r\nBcc: e@example.com", "c\x00id", "c\x1bid", "a\u0085b",
		"a> <b", "\xc3", "a@example.com", "https://example.com/u"} {
		f.Add(s)
	}
	slots := map[string]func(m *Message, s string){
		"subject":        func(m *Message, s string) { m.Subject = s },
		"name":           func(m *Message, s string) { m.To[0].Name = s },
		"address":        func(m *Message, s string) { m.To[0].Address = s },
		"envelope":       func(m *Message, s string) { m.Envelope = &Envelope{From: s, To: []string{"b@example.com"}} },
		"message-id":     func(m *Message, s string) { m.MessageID = s },
		"references":     func(m *Message, s string) { m.References = []string{"r@example.com", s} },
		"unsubscribe":    func(m *Message, s string) { m.ListUnsubscribe = []string{s} },
		"header":         func(m *Message, s string) { m.Headers[0].Value = s },
		"header name":    func(m *Message, s string) { m.Headers[0].Name = s },
		"filename":       func(m *Message, s string) { m.attachments[0].Filename = s },
		"content type":   func(m *Message, s string) { m.attachments[0].ContentType = s },
		"content-id":     func(m *Message, s string) { m.attachments[0].ContentID = s },
		"second cid":     func(m *Message, s string) { m.attachments[1].ContentID = s },
		"filename twice": func(m *Message, s string) { m.attachments[0].Filename, m.attachments[1].Filename = s, s },
	}
	f.Fuzz(func(t *testing.T, s string) {
		for slot, set := range slots {
			m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}},
				Text: "hi", HTML: "<p>hi</p>", Headers: []Header{{Name: "X-A", Value: "v"}, {Name: "X-A", Value: "w"}}}
			m.AttachBytes("a.png", []byte("\x89PNG")).ContentID = "logo@example.com"
			m.AttachBytes("a.png", []byte("\x89PNG"))
			set(m, s)
			verr := m.Validate()
			var b bytes.Buffer
			_, err := m.WriteTo(&b)
			if verr != nil {
				if err == nil || b.Len() > 0 {
					t.Fatalf("%s %q: Validate: %v, but WriteTo = %v after %d bytes", slot, s, verr, err, b.Len())
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s %q validates but does not render: %v", slot, s, err)
			}
			raw := b.Bytes()
			for i, c := range raw {
				if c == '\r' && i+1 < len(raw) && raw[i+1] == '\n' || c == '\n' && i > 0 && raw[i-1] == '\r' || c == '\t' {
					continue
				}
				if c < ' ' || c == 0x7f {
					t.Fatalf("%s %q: byte %#x at %d:\n%q", slot, s, c, i, raw)
				}
			}
			r, err := mail.CreateReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("%s %q: %v", slot, s, err)
			}
			parts := 0
			for ; ; parts++ {
				p, err := r.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%s %q: part %d: %v", slot, s, parts, err)
				}
				io.Copy(io.Discard, p.Body)
			}
			if parts != 4 {
				t.Fatalf("%s %q: %d parts, want text, HTML and two attachments", slot, s, parts)
			}
		}
	})
}

// TestRawHeaders: a raw value is written exactly as given, folding
// included; anything that could inject a field or break the header is
// refused.
func TestRawHeaders(t *testing.T) {
	folded := "mx.example.test;\r\n\tdkim=pass header.d=example.test header.s=s1 header.b=AbCdEfGh;\r\n\tspf=pass smtp.mailfrom=example.test"
	m := &Message{From: Recipient{Address: "a@example.test"}, To: []Recipient{{Address: "b@example.test"}}, Subject: "s", Text: "x",
		Headers: []Header{{Name: "Authentication-Results", Value: folded, Raw: true}, {Name: "X-Long", Value: strings.Repeat("word ", 30), Raw: true}}}
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\r\nAuthentication-Results: " + folded + "\r\n", "\r\nX-Long: " + strings.Repeat("word ", 30) + "\r\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("not written as given: %q\n%s", want, b.String())
		}
	}
	for _, v := range []string{"a\r\nBcc: x@example.test", "a\nb", "a\rb", "a\r\n", "a\r\n \r\n b", "caf\u00e9", "a\x00b", strings.Repeat("x", 995)} {
		m.Headers = []Header{{Name: "X-Raw", Value: v, Raw: true}}
		if err := m.Validate(); err == nil {
			t.Errorf("raw value %q accepted", v)
		}
	}
	m.Headers = []Header{{Name: "Subject", Value: "x", Raw: true}}
	if err := m.Validate(); err == nil {
		t.Error("a managed field accepted as raw")
	}
}

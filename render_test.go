package mailer

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-message/mail"
	gmtextproto "github.com/emersion/go-message/textproto"
)

// pythonParse is run by python3: it parses the message with the standard
// library's email package (policy.default) and prints what it found.
const pythonParse = `
import email, email.policy, hashlib, json, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
out = {"subject": str(msg["subject"]), "from": [str(a) for a in msg["from"].addresses],
       "to": [[a.display_name, a.addr_spec] for a in msg["to"].addresses],
       "bcc": msg["bcc"] is not None, "defects": [str(d) for d in msg.defects],
       "structure": [], "files": {}}
for part in msg.walk():
    out["structure"].append(part.get_content_type())
    out["defects"] += [str(d) for d in part.defects]
    fn = part.get_filename()
    if fn:
        out["files"][fn] = hashlib.sha256(part.get_payload(decode=True)).hexdigest()
body = msg.get_body(("plain",))
out["text"] = body.get_content() if body else None
html = msg.get_body(("html",))
out["html"] = html.get_content() if html else None
print(json.dumps(out))
`

func TestRenderReadByPython(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 missing under CI")
		}
		t.Skip("python3 not installed: the independent MIME parser check needs it")
	}
	m := fullMessage(t)
	path := filepath.Join(t.TempDir(), "msg.eml")
	os.WriteFile(path, render(t, m), 0o644)
	out, err := exec.Command(python, "-c", pythonParse, path).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var got struct {
		Subject, Text, HTML string
		From                []string
		To                  [][]string
		Bcc                 bool
		Defects, Structure  []string
		Files               map[string]string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	if got.Subject != m.Subject || got.Text != strings.ReplaceAll(m.Text, "\r\n", "\n") || got.HTML != m.HTML+"\n" && got.HTML != m.HTML {
		t.Errorf("python read subject %q text %q html %q", got.Subject, got.Text, got.HTML)
	}
	if len(got.To) != 2 || got.To[0][0] != "Foo, Jr." || got.To[1][0] != "日本 語" || got.From[0] != `Müflone Ñandú <muflone@example.com>` || got.Bcc {
		t.Errorf("python read from %q to %q bcc %v", got.From, got.To, got.Bcc)
	}
	want := "multipart/mixed multipart/alternative text/plain multipart/related text/html image/png application/pdf application/octet-stream"
	if s := strings.Join(got.Structure, " "); s != want {
		t.Errorf("structure %s", s)
	}
	if got.Files["résumé €.pdf"] != sum([]byte("%PDF-1.4 not really\x00\x01\x02")) ||
		got.Files["data.bin"] != sum(bytes.Repeat([]byte{0, 255, 10, 13}, 1000)) || len(got.Files) != 3 {
		t.Errorf("files %v", got.Files)
	}
	if len(got.Defects) != 0 {
		t.Errorf("python found defects: %v", got.Defects)
	}
}

// pattern is an endless reader of non-repeating-looking bytes, cheap to
// make.
type pattern struct{ n uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.n = p.n*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.n >> 56)
	}
	return len(b), nil
}

func TestLargeAttachmentStreams(t *testing.T) {
	const size = 50 << 20
	m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}, Text: "big one"}
	m.AttachReader("big.bin", io.LimitReader(&pattern{}, size))
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	n, err := m.WriteTo(io.Discard)
	close(done)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	if n < size*4/3 {
		t.Errorf("rendered %d bytes for a %d-byte attachment", n, size)
	}
	grown := int64(peak.Load()) - int64(base.HeapAlloc)
	t.Logf("heap grew by at most %d KiB while rendering %d MiB", grown>>10, size>>20)
	if grown > 8<<20 {
		t.Errorf("heap grew by %d MiB, want under 8 MiB", grown>>20)
	}
}

// FuzzRender renders arbitrary field values: the renderer must refuse them
// or produce a message that parses back to the same values.
func FuzzRender(f *testing.F) {
	f.Add("Müflone", "Grüße — subject", "Foo, Jr.", "café", "Hello\nworld", "résumé.pdf")
	f.Add("", "", "", "", "", "a")
	f.Add("a\"b", "=?utf-8?q?x?=", "x\r\ny", "v\x00", "\r.\r\n", "a/b.txt")
	f.Fuzz(func(t *testing.T, fromName, subject, toName, hdr, text, filename string) {
		m := &Message{
			From:    Recipient{Name: fromName, Address: "from@example.com"},
			To:      []Recipient{{Name: toName, Address: "to@example.com"}},
			Subject: subject, Text: text,
			Headers: []Header{{Name: "X-Fuzz", Value: hdr}},
		}
		m.AttachBytes(filename, []byte(text))
		var b bytes.Buffer
		if _, err := m.WriteTo(&b); err != nil {
			return
		}
		r, err := mail.CreateReader(&b)
		if err != nil {
			t.Fatalf("rendered message does not parse: %v", err)
		}
		from, _ := r.Header.AddressList("From")
		to, _ := r.Header.AddressList("To")
		subj, _ := r.Header.Subject()
		x, _ := r.Header.Text("X-Fuzz")
		if len(from) != 1 || from[0].Name != fromName || len(to) != 1 || to[0].Name != toName {
			t.Fatalf("names: %q %q -> %v %v", fromName, toName, from, to)
		}
		if subj != strings.TrimSpace(subject) && subj != subject || x != hdr && x != strings.TrimSpace(hdr) {
			t.Fatalf("subject %q -> %q, header %q -> %q", subject, subj, hdr, x)
		}
		for {
			p, err := r.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ah, ok := p.Header.(*mail.AttachmentHeader); ok {
				name, _ := ah.Filename()
				body, _ := io.ReadAll(p.Body)
				if name != filename || string(body) != text {
					t.Fatalf("attachment %q (%d bytes) -> %q (%d bytes)", filename, len(text), name, len(body))
				}
			}
		}
	})
}

// TestRenderChecksHeadersFirst changes a prepared message behind
// Validate's back: the renderer must still refuse a field before it writes
// anything. go-message's CreatePart drops its header-writing error, which
// left a part without the blank line after its header.
func TestRenderChecksHeadersFirst(t *testing.T) {
	cases := map[string]func(m *Message){
		"content-id CRLF": func(m *Message) { m.attachments[0].ContentID = "x\r\nBcc: e@example.com" },
		"content-id NUL":  func(m *Message) { m.attachments[0].ContentID = "x\x00y" },
		"content-id ESC":  func(m *Message) { m.attachments[0].ContentID = "x\x1by" },
		"header LF":       func(m *Message) { m.Headers[0].Value = "a\nBcc: e@example.com" },
		"header DEL":      func(m *Message) { m.Headers[0].Value = "a\x7fb" },
	}
	for name, mutate := range cases {
		m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}},
			Text: "hi", Headers: []Header{{Name: "X-A", Value: "v"}}}
		m.AttachBytes("a.png", []byte("\x89PNG"))
		p, err := m.prepare(true, stamp{})
		if err != nil {
			t.Fatal(err)
		}
		mutate(m)
		var b bytes.Buffer
		if n, err := p.writeTo(&b); !errors.Is(err, ErrHeaderInjection) && !strings.Contains(fmt.Sprint(err), "control character") || n != 0 || b.Len() != 0 {
			t.Errorf("%s: writeTo = %d, %v after writing %d bytes:\n%s", name, n, err, b.Len(), b.Bytes())
		}
	}
}

// TestWriteHeaderLikeGoMessage checks that writeHeader writes what
// go-message's header writer does, on both sides of the length from which
// it leaves a field to go-message.
func TestWriteHeaderLikeGoMessage(t *testing.T) {
	var fields [][2]string
	for _, name := range []string{"Subject", "x-custom-name", "MIME-Version", "Content-ID", "X"} {
		for n := foldLen - 30; n <= foldLen+10; n++ {
			for _, v := range []string{"", strings.Repeat("a", n), strings.Repeat("ab ", n)[:n], strings.Repeat(" a\tb", n)[:n]} {
				fields = append(fields, [2]string{name, v})
			}
		}
	}
	var h gmtextproto.Header
	for i := len(fields) - 1; i >= 0; i-- {
		h.Add(fields[i][0], fields[i][1])
	}
	var want, got bytes.Buffer
	if err := gmtextproto.WriteHeader(&want, h); err != nil {
		t.Fatal(err)
	}
	r := renderers.Get().(*renderer)
	defer r.release()
	r.cw.w = &got
	if err := r.writeHeader(fields); err != nil {
		t.Fatal(err)
	}
	r.bw.Flush()
	if got.String() != want.String() {
		t.Errorf("writeHeader wrote\n%s\ngo-message\n%s", got.Bytes(), want.Bytes())
	}
}

// TestBase64Lines renders attachments around the sizes of a line and of
// the renderer's read chunk: the body is the base64 encoding in lines of
// 76 characters with CRLF between them, and the delimiter's CRLF after the
// last.
func TestBase64Lines(t *testing.T) {
	chunk := len(renderer{}.in)
	for _, n := range []int{0, 1, 2, 3, 56, 57, 58, 114, chunk - 1, chunk, chunk + 1, 3*chunk + 57} {
		data := make([]byte, n)
		(&pattern{n: uint64(n)}).Read(data)
		m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}, Text: "x"}
		m.AttachBytes("f.bin", data)
		enc := base64.StdEncoding.EncodeToString(data)
		var lines []string
		for len(enc) > 76 {
			lines, enc = append(lines, enc[:76]), enc[76:]
		}
		want := "Content-Transfer-Encoding: base64\r\n\r\n" + strings.Join(append(lines, enc), "\r\n") + "\r\n--"
		if raw := render(t, m); !bytes.Contains(raw, []byte(want)) {
			t.Errorf("%d bytes: the attachment is not in 76-character lines:\n%s", n, raw)
		}
	}
}

// TestRenderConcurrently renders one prepared message from several
// goroutines, which share the pool of buffers: every rendering is the same.
func TestRenderConcurrently(t *testing.T) {
	p, err := fullMessage(t).prepare(true, stamp{})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if _, err := p.writeTo(&want); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				var b bytes.Buffer
				if _, err := p.writeTo(&b); err != nil || !bytes.Equal(b.Bytes(), want.Bytes()) {
					t.Errorf("rendering differs (%v):\n%s", err, b.Bytes())
					return
				}
			}
		})
	}
	wg.Wait()
}

// failAfter accepts n bytes, then fails.
type failAfter struct{ n int }

var errFailAfter = errors.New("write failed")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, errFailAfter
	}
	f.n -= len(p)
	return len(p), nil
}

// TestRenderFailures checks that a failing destination or attachment is
// the rendering's error, with the count of the bytes written, and that the
// pooled buffers hold nothing of it for the next rendering.
func TestRenderFailures(t *testing.T) {
	p, err := fullMessage(t).prepare(true, stamp{})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if _, err := p.writeTo(&want); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 100, 5000, want.Len() - 1} {
		if n, err := p.writeTo(&failAfter{k}); !errors.Is(err, errFailAfter) || n != int64(k) {
			t.Errorf("failing after %d bytes: writeTo = %d, %v", k, n, err)
		}
	}
	m := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}}, Text: "x"}
	m.AttachReader("gone.bin", iotest.ErrReader(errFailAfter))
	if _, err := m.WriteTo(io.Discard); !errors.Is(err, errFailAfter) || !strings.Contains(err.Error(), `reading attachment "gone.bin"`) {
		t.Errorf("failing attachment: %v", err)
	}
	var again bytes.Buffer
	if _, err := p.writeTo(&again); err != nil || !bytes.Equal(again.Bytes(), want.Bytes()) {
		t.Errorf("rendering after the failures differs (%v):\n%s", err, again.Bytes())
	}
}

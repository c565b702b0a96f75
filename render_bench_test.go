package mailer

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// BenchmarkWriteTo renders the message of the bench module's render table
// (cd bench && go run ./cmd/bench): text, HTML and an 8 KiB attachment,
// validated and prepared on every call as WriteTo does.
func BenchmarkWriteTo(b *testing.B) {
	m := &Message{
		From: Recipient{Address: "sender@example.com"}, To: []Recipient{{Address: "rcpt@example.com"}},
		Subject: "Report", Text: strings.Repeat("Plain text body line.\n", 40),
		HTML: "<html><body>" + strings.Repeat("<p>HTML body line.</p>\n", 40) + "</body></html>",
	}
	m.AttachBytes("small.pdf", bytes.Repeat([]byte("%PDF"), 2048))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRender renders a prepared message: the rendering alone.
func BenchmarkRender(b *testing.B) {
	m := &Message{
		From:    Recipient{Name: "Sender", Address: "sender@example.com"},
		To:      []Recipient{{Name: "Recipient", Address: "rcpt@example.com"}},
		Subject: "Monthly report", Text: strings.Repeat("Plain text body line.\n", 40),
		HTML: "<html><body>" + strings.Repeat("<p>HTML body line.</p>\n", 40) + "</body></html>",
	}
	m.AttachBytes("small.pdf", bytes.Repeat([]byte("%PDF"), 2048))
	p, err := m.prepare(true, stamp{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.writeTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

package mailer

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomailer/mailer/mailertest"
)

const emlSample = "Received: from somewhere\n" +
	"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.test>\n" +
	"To: Ann <ann@example.test>, bob@example.test\n" +
	"Cc: team: carl@example.test, dora@example.test;\n" +
	"Bcc: hidden@example.test,\n" +
	" also-hidden@example.test\n" +
	"Subject: an existing message\n" +
	"Message-ID: <eml-1@example.test>\n" +
	"\n" +
	"Body line.\n" +
	"Bcc: in the body stays\n"

// TestSendEML: the envelope comes from the header, Bcc leaves it, the
// rest goes as it is, and the Message-ID comes back.
func TestSendEML(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv)
	res, err := c.SendEML(testCtx(t), strings.NewReader(emlSample))
	if err != nil {
		t.Fatal(err)
	}
	m := srv.Messages()[0]
	wantTo := []string{"ann@example.test", "bob@example.test", "carl@example.test", "dora@example.test", "hidden@example.test", "also-hidden@example.test"}
	if m.From != "jorg@example.test" || !slices.Equal(m.To, wantTo) || res.MessageID != "eml-1@example.test" {
		t.Errorf("envelope %s -> %v, ID %q", m.From, m.To, res.MessageID)
	}
	data := string(m.Data)
	want := strings.ReplaceAll(strings.Replace(emlSample, "Bcc: hidden@example.test,\n also-hidden@example.test\n", "", 1), "\n", "\r\n")
	if data != want {
		t.Errorf("sent\n%q\nwant\n%q", data, want)
	}
}

func TestSendEMLEnvelopeRules(t *testing.T) {
	cases := []struct {
		name, header string
		from         string
		to           []string
	}{
		{"Sender wins", "From: a@example.test\nSender: s@example.test\nTo: b@example.test\n", "s@example.test", []string{"b@example.test"}},
		{"resent", "Resent-Date: Mon, 1 Dec 2026 10:00:00 +0000\nResent-From: r@example.test\nResent-To: new@example.test\nResent-Bcc: secret@example.test\n" +
			"Resent-Date: Sun, 30 Nov 2026 10:00:00 +0000\nResent-From: old@example.test\nResent-To: older@example.test\n" +
			"From: a@example.test\nTo: b@example.test\n", "r@example.test", []string{"new@example.test", "secret@example.test"}},
		{"undisclosed", "From: a@example.test\nTo: undisclosed-recipients:;\nBcc: b@example.test\n", "a@example.test", []string{"b@example.test"}},
		{"duplicates", "From: a@example.test\nTo: b@example.test\nCc: b@EXAMPLE.test\n", "a@example.test", []string{"b@example.test"}},
	}
	for _, tc := range cases {
		srv := newTestServer(t)
		c := plainConnect(t, srv)
		if _, err := c.SendEML(testCtx(t), strings.NewReader(tc.header+"\nbody\n")); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		m := srv.Messages()[0]
		if m.From != tc.from || !slices.Equal(m.To, tc.to) {
			t.Errorf("%s: %s -> %v", tc.name, m.From, m.To)
		}
		if strings.Contains(strings.ToLower(string(m.Data)), "bcc:") {
			t.Errorf("%s: a Bcc field was sent", tc.name)
		}
	}
}

func TestSendEMLRefusals(t *testing.T) {
	srv := newTestServer(t)
	c := plainConnect(t, srv)
	for name, msg := range map[string]string{
		"no recipient":  "From: a@example.test\nSubject: x\n\nbody\n",
		"no sender":     "To: b@example.test\n\nbody\n",
		"bad address":   "From: a@example.test\nTo: not an address\n\nbody\n",
		"not a header":  "this is not a header\n\nbody\n",
		"continuation":  " From: a@example.test\nTo: b@example.test\n\nbody\n",
		"bare CR":       "From: a@example.test\rBcc: x@example.test\nTo: b@example.test\n\nbody\n",
		"empty":         "",
		"huge header":   "From: a@example.test\nTo: b@example.test\nX: " + strings.Repeat("x", maxEMLHeader) + "\n\nbody\n",
		"injected RCPT": "From: a@example.test\nTo: <b@example.test>\r\n RCPT TO:<c@example.test>\n\nbody\n",
	} {
		if _, err := c.SendEML(testCtx(t), strings.NewReader(msg)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := len(srv.Commands()); n != 0 {
		t.Errorf("commands sent for refused messages: %q", srv.Commands())
	}
}

// TestSendEMLRetriesAndSigns: a file is read again for DKIM and for a
// retry; a read-once reader is spooled for DKIM.
func TestSendEMLRetriesAndSigns(t *testing.T) {
	sigs, records := testSigs(t)
	path := filepath.Join(t.TempDir(), "m.eml")
	if err := os.WriteFile(path, []byte(emlSample), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, mailertest.WithFault(mailertest.Fault{Command: "MAIL", Conn: 1, Nth: 1, Action: mailertest.Reply, Code: 451}))
	c := retrying(t, srv, WithDKIM(sigs...))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := c.SendEML(testCtx(t), f)
	if err != nil || res.Attempts != 2 {
		t.Fatalf("%v %+v", err, res)
	}
	if _, err := c.SendEML(testCtx(t), io.MultiReader(strings.NewReader(emlSample))); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs {
		verifyDKIM(t, m.Data, records, 2)
		if strings.Contains(string(m.Data), "hidden@") {
			t.Error("Bcc sent")
		}
	}
	var re *readerError
	_, err = c.SendEML(testCtx(t), io.MultiReader(strings.NewReader("From: a@example.test\n"), errReader{}))
	if !errors.As(err, &re) {
		t.Errorf("a failing reader: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

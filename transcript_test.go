package mailer

import (
	"bytes"
	"net"
	"runtime"
	"strings"
	"testing"
)

func TestTranscriptRedactsAuthAndSummarisesData(t *testing.T) {
	var out bytes.Buffer
	sink := &transcriptSink{w: &out}
	tr := newTranscript(sink, 1)
	secret := "AGFsaWNlAHMzY3JldA=="
	// The session marks credentials (setSecret) and message data
	// (startData); the server's replies change nothing.
	const (
		server = iota
		client
		secretOn
		secretOff
		data
	)
	steps := []struct {
		kind int
		s    string
	}{
		{server, "220 mx ESMTP\r\n"},
		{client, "EHLO me\r\n"},
		{server, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n"},
		{secretOn, ""},
		{client, "AUTH PLAIN " + secret + "\r\n"},
		{server, "235 2.7.0 ok\r\n"},
		{secretOff, ""},
		{secretOn, ""},
		{client, "AUTH LOGIN\r\n"},
		{server, "334 VXNlcm5hbWU6\r\n235 early\r\n"}, // a reply read ahead
		{client, "YWxpY2U=\r\n"},
		{server, "334 UGFzc3dvcmQ6\r\n"},
		{client, "czNjcmV0\r\n"},
		{server, "535 5.7.8 no\r\n"},
		{secretOff, ""},
		{client, "MAIL FROM:<a@b>\r\n"},
		{server, "250 ok\r\n"},
		{client, "DATA\r\n"},
		{server, "354 go\r\n"},
		{data, ""},
		{client, "Subject: s3cret-body\r\n\r\nline\r"},
		{client, "\n..dot\r\n.\r\n"},
		{server, "250 queued\x1b[31m\r\n"},
	}
	for _, s := range steps {
		switch s.kind {
		case client:
			tr.client([]byte(s.s))
		case server:
			tr.server([]byte(s.s))
		case secretOn, secretOff:
			tr.setSecret(s.kind == secretOn)
		case data:
			tr.startData()
		}
	}
	got := out.String()
	for _, bad := range []string{secret, "YWxpY2U=", "czNjcmV0", "s3cret-body"} {
		if strings.Contains(got, bad) {
			t.Errorf("transcript contains %q:\n%s", bad, got)
		}
	}
	for _, want := range []string{"C: AUTH PLAIN [redacted]\n", "C: AUTH LOGIN\n", "C: [redacted]\n",
		"S: 334 VXNlcm5hbWU6\n", "C: MAIL FROM:<a@b>\n", "C: [37 bytes of message data]\n", "C: .\n", "S: 250 queued\\x1b[31m\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("transcript lacks %q:\n%s", want, got)
		}
	}
}

func TestTranscriptCutsLongLines(t *testing.T) {
	var out bytes.Buffer
	tr := newTranscript(&transcriptSink{w: &out}, 1)
	tr.server(bytes.Repeat([]byte("x"), 3*maxTranscriptLine))
	tr.server([]byte("\r\n"))
	if n := len(strings.TrimSpace(out.String())); n > maxTranscriptLine+10 {
		t.Errorf("line of %d bytes kept", n)
	}
}

func TestQuickAckerOnlyForTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if quickAcker(a) != nil {
		t.Error("quick ACK for a pipe")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if f := quickAcker(c); runtime.GOOS == "linux" && f == nil {
		t.Error("no quick ACK for a TCP socket on Linux")
	} else if f != nil {
		f() // must not panic on a live socket
	}
}

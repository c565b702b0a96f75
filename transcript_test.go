package mailer

import (
	"bytes"
	"strings"
	"testing"
)

func TestTranscriptRedactsAuthAndSummarisesData(t *testing.T) {
	var out bytes.Buffer
	sink := &transcriptSink{w: &out}
	tr := newTranscript(sink, 1)
	secret := "AGFsaWNlAHMzY3JldA=="
	steps := []struct {
		client bool
		s      string
	}{
		{false, "220 mx ESMTP\r\n"},
		{true, "EHLO me\r\n"},
		{false, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n"},
		{true, "AUTH PLAIN " + secret + "\r\n"},
		{false, "235 2.7.0 ok\r\n"},
		{true, "AUTH LOGIN\r\n"},
		{false, "334 VXNlcm5hbWU6\r\n"},
		{true, "YWxpY2U=\r\n"},
		{false, "334 UGFzc3dvcmQ6\r\n"},
		{true, "czNjcmV0\r\n"},
		{false, "535 5.7.8 no\r\n"},
		{true, "MAIL FROM:<a@b>\r\n"},
		{false, "250 ok\r\n"},
		{true, "DATA\r\n"},
		{false, "354 go\r\n"},
		{true, "Subject: s3cret-body\r\n\r\nline\r"},
		{true, "\n..dot\r\n.\r\n"},
		{false, "250 queued\r\n"},
	}
	for _, s := range steps {
		if s.client {
			tr.client([]byte(s.s))
		} else {
			tr.server([]byte(s.s))
		}
	}
	got := out.String()
	for _, bad := range []string{secret, "YWxpY2U=", "czNjcmV0", "s3cret-body"} {
		if strings.Contains(got, bad) {
			t.Errorf("transcript contains %q:\n%s", bad, got)
		}
	}
	for _, want := range []string{"C: AUTH PLAIN [redacted]\n", "C: AUTH LOGIN\n", "C: [redacted]\n",
		"S: 334 VXNlcm5hbWU6\n", "C: MAIL FROM:<a@b>\n", "C: [37 bytes of message data]\n", "C: .\n", "S: 250 queued\n"} {
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

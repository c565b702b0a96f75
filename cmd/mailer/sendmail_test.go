package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/gomailer/mailer/mailertest"
)

const sendmailMessage = "From: Sender <sender@example.com>\n" +
	"To: To One <one@example.com>,\n two@example.com\n" +
	"Cc: cc@example.com\n" +
	"Bcc: Hidden <hidden@example.com>\n" +
	"Subject: from sendmail\n" +
	"\n" +
	"first line\n" +
	".\n" +
	"after the dot\n"

func TestSendmailExtract(t *testing.T) {
	srv := plainServer(t)
	r := invocation{args: []string{"sendmail", "--server", srv.Addr(), "--security", "none", "-t", "-oi", "extra@example.com"},
		stdin: sendmailMessage}.run(t)
	r.wantCode(t, 0)
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
	m := waitOne(t, srv)
	if m.From != "sender@example.com" {
		t.Errorf("MAIL FROM %q, want the From address", m.From)
	}
	want := []string{"extra@example.com", "one@example.com", "two@example.com", "cc@example.com", "hidden@example.com"}
	if !slices.Equal(m.To, want) {
		t.Errorf("RCPT TO %v, want %v", m.To, want)
	}
	data := string(m.Data)
	if strings.Contains(data, "Bcc") || strings.Contains(data, "hidden@") {
		t.Errorf("the Bcc header was sent:\n%s", data)
	}
	if !strings.Contains(data, "To: To One <one@example.com>,\r\n two@example.com\r\n") {
		t.Errorf("the folded To header was not kept as it was:\n%s", data)
	}
	if !strings.Contains(data, "after the dot") {
		t.Errorf("-oi did not keep the lines after a lone dot:\n%s", data)
	}
	if header(m.Data, "Date") == "" {
		t.Error("no Date header was added")
	}
}

func TestSendmailDotEndsMessage(t *testing.T) {
	srv := plainServer(t)
	r := invocation{args: []string{"sendmail", "--server", srv.Addr(), "--security", "none", "-f", "bounce@example.com", "rcpt@example.com"},
		stdin: sendmailMessage}.run(t)
	r.wantCode(t, 0)
	m := waitOne(t, srv)
	if m.From != "bounce@example.com" {
		t.Errorf("MAIL FROM %q, want -f's", m.From)
	}
	if !slices.Equal(m.To, []string{"rcpt@example.com"}) {
		t.Errorf("RCPT TO %v: without -t only the arguments count", m.To)
	}
	if data := string(m.Data); strings.Contains(data, "after the dot") || !strings.Contains(data, "first line") {
		t.Errorf("without -i the lone dot must end the message:\n%s", data)
	}
}

// TestSendmailNoHeader sends a body without any header, as cron does with
// a script's output: From and Date are added.
func TestSendmailNoHeader(t *testing.T) {
	srv := plainServer(t)
	invocation{name: "sendmail", args: []string{"--server", srv.Addr(), "--security", "none", "-i", "-F", "Cron Daemon", "-fcron@example.com", "admin@example.com"},
		stdin: "disk almost full: 97%\n"}.run(t).wantCode(t, 0)
	m := waitOne(t, srv)
	if got := header(m.Data, "From"); got != "Cron Daemon <cron@example.com>" {
		t.Errorf("From %q", got)
	}
	if !strings.HasSuffix(string(m.Data), "\r\n\r\ndisk almost full: 97%\r\n") {
		t.Errorf("body not kept:\n%q", m.Data)
	}
}

func TestSendmailExitCodes(t *testing.T) {
	srv := plainServer(t,
		mailertest.WithRecipientReply("later@example.com", 451, "4.3.0", "try later"),
		mailertest.WithRecipientReply("nobody@example.com", 550, "5.1.1", "no such user"))
	base := []string{"sendmail", "--server", srv.Addr(), "--security", "none", "-i"}
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		code  int
		say   string
	}{
		{"temporary", []string{"later@example.com"}, sendmailMessage, exTempFail, "451 4.3.0 try later"},
		{"unknown user", []string{"nobody@example.com"}, sendmailMessage, exNoUser, "550 5.1.1"},
		{"no recipients", nil, sendmailMessage, exUsage, "no recipients"},
		{"bad recipient", []string{"not an address@"}, sendmailMessage, exDataErr, "recipient"},
		{"empty message", []string{"r@example.com"}, "", exDataErr, "no message"},
		{"unsupported mode", []string{"-bp"}, "", exUsage, "not supported"},
		{"unknown long flag", []string{"--nope"}, "", exUsage, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := invocation{args: append(slices.Clone(base), tc.args...), stdin: tc.stdin}.run(t)
			r.wantCode(t, tc.code)
			if !strings.Contains(r.stderr, tc.say) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.say)
			}
		})
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages delivered, want none", n)
	}
}

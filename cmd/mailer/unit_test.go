package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseDate(t *testing.T) {
	want := time.Date(2023, 1, 2, 10, 0, 0, 0, time.FixedZone("", 3600))
	for _, s := range []string{
		"Mon, 02 Jan 2023 10:00:00 +0100",
		"2023-01-02T10:00:00+01:00",
		"2023-01-02 10:00:00+01:00",
		"2023-01-02 10:00:00 +01:00",
		"2023-01-02 10:00:00.00 +01:00",
		"2023-01-02 10:00:00 +0100",
	} {
		got, err := parseDate(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseDate(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if got, err := parseDate("2023-01-02 10:00:00"); err != nil || got.Location() != time.Local || got.Hour() != 10 {
		t.Errorf("a date without a zone is local time: %v, %v", got, err)
	}
	if _, err := parseDate("yesterday"); err == nil {
		t.Error("parseDate accepted nonsense")
	}
}

func TestExpandMultiValues(t *testing.T) {
	cmd := newSendCommand()
	for _, tc := range []struct{ in, want string }{
		{"send --to a b --cc c", "send --to a --to b --cc c"},
		{"send --to=a b --html c", "send --to=a --to b --html c"},
		{"send --reply_to r --subject s t", "send --reply_to r --subject s t"},
		{"send --attachment x y --content-type p q --body-file -", "send --attachment x --attachment y --content-type p --content-type q --body-file -"},
		{"send --header A=1 B=2 -- --to z", "send --header A=1 --header B=2 -- --to z"},
	} {
		got := strings.Join(expandMultiValues(strings.Fields(tc.in), cmd), " ")
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitMessage(t *testing.T) {
	for _, tc := range []struct{ name, in, out string }{
		{"crlf, folded Bcc", "To: a@x\r\nBcc: b@x,\r\n c@x\r\nSubject: s\r\n\r\nbody\r\n", "To: a@x\r\nSubject: s\r\n\r\nbody\r\n"},
		{"no header", "just text\nmore\n", "\njust text\nmore\n"},
		{"mbox From line", "From someone Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n", "Subject: s\n\nb\n"},
		{"header only", "Subject: s\n", "Subject: s\n\n"},
	} {
		m := splitMessage([]byte(tc.in))
		m.remove("Bcc")
		if got := string(m.bytes()); got != tc.out {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.out)
		}
	}
	if got := string(cutAtDot([]byte("a\r\n.\r\nb\r\n"))); got != "a\r\n" {
		t.Errorf("cutAtDot: %q", got)
	}
}

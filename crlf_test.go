package mailer

import (
	"bytes"
	"strings"
	"testing"
)

func normalise(chunks ...string) string {
	var b bytes.Buffer
	w := newCRLFWriter(&b)
	for _, c := range chunks {
		w.Write([]byte(c))
	}
	w.Close()
	return b.String()
}

func TestCRLFWriter(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{"a\r\nb\r\n"}, "a\r\nb\r\n"},
		{[]string{"a\nb\n"}, "a\r\nb\r\n"},
		{[]string{"a\rb\r"}, "a\r\nb\r\n"},
		{[]string{"a\r", "\nb"}, "a\r\nb"},
		{[]string{"a\r", "b"}, "a\r\nb"},
		{[]string{"\r\r\n"}, "\r\n\r\n"},
		{[]string{"x\r.\r\nMAIL FROM:<evil@x>\r\n"}, "x\r\n.\r\nMAIL FROM:<evil@x>\r\n"},
		{[]string{"x\n.\r\n"}, "x\r\n.\r\n"},
	}
	for _, tc := range cases {
		if got := normalise(tc.in...); got != tc.want {
			t.Errorf("%q -> %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzCRLFWriter checks that no bare CR or LF survives, however the input
// is split into writes.
func FuzzCRLFWriter(f *testing.F) {
	f.Add("a\r.\r\nb", 1)
	f.Add("\n\r\r\n\n", 2)
	f.Fuzz(func(t *testing.T, s string, split int) {
		var chunks []string
		if split > 0 && split < len(s) {
			chunks = []string{s[:split], s[split:]}
		} else {
			chunks = []string{s}
		}
		out := normalise(chunks...)
		stripped := strings.ReplaceAll(out, "\r\n", "")
		if strings.ContainsAny(stripped, "\r\n") {
			t.Fatalf("%q -> %q has a bare CR or LF", s, out)
		}
		if normalise(s) != out {
			t.Fatalf("split changed the output for %q", s)
		}
	})
}

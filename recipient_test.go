package mailer

import (
	"errors"
	"net/mail"
	"strings"
	"testing"
)

func TestParseRecipient(t *testing.T) {
	cases := []struct {
		in   string
		want Recipient
	}{
		{`foo@example.com`, Recipient{Address: "foo@example.com"}},
		{`<foo@example.com>`, Recipient{Address: "foo@example.com"}},
		{`Foo Bar <foo@example.com>`, Recipient{"Foo Bar", "foo@example.com"}},
		{`"Bar, Foo" <foo@example.com>`, Recipient{"Bar, Foo", "foo@example.com"}},
		{`=?utf-8?q?M=C3=BCller?= <m@example.com>`, Recipient{"Müller", "m@example.com"}},
		{`Müller Jürgen <m@example.com>`, Recipient{"Müller Jürgen", "m@example.com"}},
		{`Foo Bar foo@example.com`, Recipient{"Foo Bar", "foo@example.com"}},
		{`  Muflone   muflone@example.com `, Recipient{"Muflone", "muflone@example.com"}},
		{`Ünïcode Name user@bücher.example`, Recipient{"Ünïcode Name", "user@bücher.example"}},
	}
	for _, tc := range cases {
		got, err := ParseRecipient(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRecipient(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "foo", "foo@", "@example.com", "a b c", "undisclosed-recipients:;",
		"group: a@example.com;", "foo@example.com\r\nBcc: x@example.com", "a..b@example.com", "Foo <foo@example.com"} {
		_, err := ParseRecipient(bad)
		if !errors.Is(err, ErrInvalidAddress) && !errors.Is(err, ErrHeaderInjection) {
			t.Errorf("ParseRecipient(%q) = %v, want an error", bad, err)
		}
	}
}

func TestParseRecipientList(t *testing.T) {
	got, err := ParseRecipientList(`"Bar, Foo" <foo@example.com>, b@example.com, Caio c@example.com`)
	if err != nil || len(got) != 3 || got[0].Name != "Bar, Foo" || got[2] != (Recipient{"Caio", "c@example.com"}) {
		t.Fatalf("= %+v, %v", got, err)
	}
	if _, err := ParseRecipientList("team: a@example.com, b@example.com;"); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("group: %v", err)
	}
	if _, err := ParseRecipientList(" , "); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("empty: %v", err)
	}
}

func TestRecipientString(t *testing.T) {
	cases := map[Recipient]string{
		{Address: "a@example.com"}:                   "a@example.com",
		{Name: "Foo Bar", Address: "a@example.com"}:  "Foo Bar <a@example.com>",
		{Name: "Bar, Foo", Address: "a@example.com"}: `"Bar, Foo" <a@example.com>`,
		{Name: `Say "hi"`, Address: "a@example.com"}: `"Say \"hi\"" <a@example.com>`,
		{Name: "Jürgen", Address: "a@example.com"}:   "=?utf-8?q?J=C3=BCrgen?= <a@example.com>",
	}
	for r, want := range cases {
		if got := r.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", r, got, want)
		}
		back, err := ParseRecipient(r.String())
		if err != nil || back != r {
			t.Errorf("round trip of %+v: %+v, %v", r, back, err)
		}
	}
}

// FuzzParseRecipient checks that whatever parses renders to a form that
// parses back to the same recipient, and never carries CR or LF.
func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{`Foo <foo@example.com>`, `"a\"b" <x@y.z>`, `Foo Bar foo@example.com`,
		`=?utf-8?q?J=C3=BCrgen?= <j@example.com>`, "a@b.c", "x\r\ny@z.w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecipient(s)
		if err != nil {
			return
		}
		out := r.String()
		if strings.ContainsAny(out, "\r\n\x00") {
			t.Fatalf("%q rendered as %q", s, out)
		}
		back, err := ParseRecipient(out)
		if err != nil || back != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, out, back, err)
		}
		if _, err := mail.ParseAddress(out); err != nil && isASCII(out) {
			t.Fatalf("net/mail cannot read %q: %v", out, err)
		}
	})
}

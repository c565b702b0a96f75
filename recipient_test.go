package mailer

import (
	"errors"
	"io"
	"net/mail"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
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

// TestOneAddressRule checks that a Recipient's address, Message.Envelope
// and SendRaw's Envelope are held to the same rules: SendRaw and
// Message.Envelope once let \v, ESC, DEL and 5,010-byte addresses through
// to MAIL FROM.
func TestOneAddressRule(t *testing.T) {
	label := strings.Repeat("a", 63)
	domain252 := label + "." + label + "." + label + "." + strings.Repeat("b", 60) // 252 octets
	cases := []struct {
		addr string
		want error
	}{
		{"a@example.com", nil},
		{"a.b+c@example.com", nil},
		{"a@localhost", nil},
		{"jürgen@example.com", nil},
		{"user@bücher.example", nil},
		{strings.Repeat("x", 64) + "@example.com", nil},
		{"a@" + domain252, nil}, // 254 octets: a 256-octet path with "<" and ">"
		{strings.Repeat("x", 65) + "@example.com", ErrInvalidAddress},
		{"aa@" + domain252, ErrInvalidAddress},
		{strings.Repeat("a", 4998) + "@example.com", ErrInvalidAddress},
		{"a@" + strings.Repeat("ü.", 80) + "example", ErrInvalidAddress}, // fits in UTF-8, not as A-labels
		{"a\vb@example.com", ErrInvalidAddress},
		{"a\x1bb@example.com", ErrInvalidAddress},
		{"a\x7fb@example.com", ErrInvalidAddress},
		{"a\u0085b@example.com", ErrInvalidAddress},
		{"a\u009bb@example.com", ErrInvalidAddress},
		{"a\u00a0b@example.com", ErrInvalidAddress},
		{"a\u2028b@example.com", ErrInvalidAddress},
		{"a\xffb@example.com", ErrInvalidAddress},
		{"a@exa\x1bmple.com", ErrInvalidAddress},
		{"a b@example.com", ErrInvalidAddress},
		{"a\tb@example.com", ErrInvalidAddress},
		{"<a@example.com>", ErrInvalidAddress},
		{"a@example.com>", ErrInvalidAddress},
		{`"a b"@example.com`, ErrInvalidAddress},
		{"a@[192.0.2.1]", ErrInvalidAddress},
		{"a@b", ErrInvalidAddress},
		{"@example.com", ErrInvalidAddress},
		{"a@", ErrInvalidAddress},
		{"a@example.com\r\nRCPT TO:<x@example.com>", ErrHeaderInjection},
		{"a\x00@example.com", ErrHeaderInjection},
		{strings.Repeat("a", 4998) + "\n@example.com", ErrHeaderInjection},
	}
	c := plain(t, "127.0.0.1:1")
	for _, tc := range cases {
		name := tc.addr
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		paths := map[string]error{
			"recipient": (&Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: tc.addr}}}).Validate(),
			"envelope from": (&Message{From: Recipient{Address: "a@example.com"},
				Envelope: &Envelope{From: tc.addr, To: []string{"b@example.com"}}}).Validate(),
			"envelope to": (&Message{From: Recipient{Address: "a@example.com"},
				Envelope: &Envelope{To: []string{tc.addr}}}).Validate(),
			"checkEnvelope": checkEnvelope(Envelope{From: tc.addr, To: []string{tc.addr}}),
		}
		if tc.want != nil {
			_, paths["SendRaw"] = c.SendRaw(testCtx(t), Envelope{From: tc.addr, To: []string{"b@example.com"}}, strings.NewReader("x"))
		}
		for path, err := range paths {
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%q via %s: %v, want %v", name, path, err, tc.want)
			}
			if err != nil && len(err.Error()) > 200 {
				t.Errorf("%q via %s: a %d-byte error", name, path, len(err.Error()))
			}
		}
	}
	if err := checkEnvelope(Envelope{To: []string{"b@example.com"}}); err != nil {
		t.Errorf("null reverse-path: %v", err)
	}
}

// FuzzCheckAddress checks that an address that passes has no control
// character or white space, keeps within RFC 5321's limits in both its
// UTF-8 and its A-label form, is accepted alike by every path, and renders.
func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{"a@example.com", "jürgen@bücher.example", "a\u0085b@example.com", "a\x1b@example.com",
		"a@localhost", `"a b"@example.com`, "a@" + strings.Repeat("ü.", 80) + "example", strings.Repeat("x", 64) + "@x.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		err := checkAddress(addr)
		if env := checkEnvelope(Envelope{From: addr, To: []string{addr}}); (env == nil) != (err == nil) && addr != "" {
			t.Fatalf("%q: checkAddress %v, checkEnvelope %v", addr, err, env)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidAddress) && !errors.Is(err, ErrHeaderInjection) {
				t.Fatalf("%q: %v wraps neither sentinel", addr, err)
			}
			if len(err.Error()) > 600 { // 100 bytes quoted, at most 4 bytes each, and the text
				t.Fatalf("%q: a %d-byte error", addr, len(err.Error()))
			}
			return
		}
		if !utf8.ValidString(addr) || strings.IndexFunc(addr, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 ||
			strings.ContainsAny(addr, "<>") {
			t.Fatalf("%q passed", addr)
		}
		at := strings.LastIndexByte(addr, '@')
		ascii, aerr := asciiAddress("x@" + addr[at+1:])
		if aerr != nil || at > 64 || len(addr) > 254 || at+len(ascii)-1 > 254 {
			t.Fatalf("%q passed: local part %d octets, A-label form %q (%v)", addr, at, ascii, aerr)
		}
		m := &Message{From: Recipient{Address: addr}, To: []Recipient{{Name: "N", Address: addr}}, Text: "x"}
		if err := m.Validate(); err != nil {
			t.Fatalf("%q: Message.Validate: %v", addr, err)
		}
		if _, err := m.WriteTo(io.Discard); err != nil {
			t.Fatalf("%q: WriteTo: %v", addr, err)
		}
		if _, err := m.prepare(false, stamp{}); err != nil && !errors.Is(err, ErrSMTPUTF8Unsupported) {
			t.Fatalf("%q: prepare without SMTPUTF8: %v", addr, err)
		}
	})
}

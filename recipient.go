package mailer

import (
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Recipient is a mailbox: an optional display name and an address.
type Recipient struct {
	Name    string
	Address string
}

// ParseRecipient parses one mailbox in RFC 5322 form ("Foo Bar"
// <foo@example.com>, Foo Bar <foo@example.com>, foo@example.com, with
// RFC 2047 encoded names) or in mumailer's form (Foo Bar foo@example.com).
// A group, an invalid address or a CR or LF is an error wrapping
// ErrInvalidAddress or ErrHeaderInjection.
func ParseRecipient(s string) (Recipient, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		return Recipient{}, fmt.Errorf("%w: %q", ErrHeaderInjection, s)
	}
	s = strings.TrimSpace(s)
	if isGroup(s) {
		return Recipient{}, fmt.Errorf("%w: %q is a group, not a mailbox", ErrInvalidAddress, s)
	}
	if a, err := addressParser.Parse(s); err == nil {
		r := Recipient{Name: a.Name, Address: a.Address}
		return r, r.validate()
	}
	// mumailer's form: the last word is the address, the rest the name.
	if i := strings.LastIndexAny(s, " \t"); i > 0 {
		r := Recipient{Name: strings.TrimSpace(s[:i]), Address: s[i+1:]}
		if r.validate() == nil && !strings.ContainsAny(r.Name, "<>") {
			return r, nil
		}
	}
	return Recipient{}, fmt.Errorf("%w: %q", ErrInvalidAddress, s)
}

// ParseRecipientList parses a comma-separated list of mailboxes, each in
// a form ParseRecipient accepts.
func ParseRecipientList(s string) ([]Recipient, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		return nil, fmt.Errorf("%w: %q", ErrHeaderInjection, s)
	}
	if isGroup(s) {
		return nil, fmt.Errorf("%w: %q contains a group", ErrInvalidAddress, s)
	}
	if list, err := addressParser.ParseList(s); err == nil {
		out := make([]Recipient, len(list))
		for i, a := range list {
			out[i] = Recipient{Name: a.Name, Address: a.Address}
			if err := out[i].validate(); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	var out []Recipient
	for _, part := range splitUnquoted(s, ',') {
		if strings.TrimSpace(part) == "" {
			continue
		}
		r, err := ParseRecipient(part)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty list", ErrInvalidAddress)
	}
	return out, nil
}

// addressParser decodes RFC 2047 names in any charset Go knows (UTF-8,
// ISO-8859-1, US-ASCII); mime's decoder is the standard library's.
var addressParser = &mail.AddressParser{WordDecoder: &mime.WordDecoder{}}

// isGroup reports whether s has a ':' outside quotes and angle brackets,
// which only RFC 5322 group syntax has.
func isGroup(s string) bool {
	quoted, angle := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '<' && !quoted:
			angle = true
		case c == '>' && !quoted:
			angle = false
		case c == ':' && !quoted && !angle:
			return true
		}
	}
	return false
}

func splitUnquoted(s string, sep byte) []string {
	var parts []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

// String returns the mailbox in RFC 5322 form: the bare address without a
// name, else the name (quoted if it has specials, RFC 2047 encoded if it is
// not ASCII) and the address in angle brackets.
func (r Recipient) String() string {
	if r.Name == "" {
		return r.Address
	}
	return formatName(r.Name) + " <" + r.Address + ">"
}

// formatName renders a display name as atoms, a quoted string (for
// specials, or spacing that atoms would lose) or RFC 2047 encoded words.
func formatName(name string) string {
	if !isASCII(name) || len(name) > 70 {
		return qEncode(name)
	}
	if strings.IndexFunc(name, func(c rune) bool {
		return !(c == ' ' || c == '!' || c >= '#' && c <= '\'' || c == '*' || c == '+' || c == '-' || c == '/' ||
			c >= '0' && c <= '9' || c == '=' || c == '?' || c >= 'A' && c <= 'Z' || c >= '^' && c <= '~')
	}) < 0 && !strings.HasPrefix(name, "=?") && name == strings.Join(strings.Fields(name), " ") {
		return name
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
}

// validate checks the name for injection and the address for RFC 5321
// syntax: a local part and a domain of dot-separated labels.
func (r Recipient) validate() error {
	if strings.ContainsAny(r.Name, "\r\n\x00") || strings.ContainsAny(r.Address, "\r\n\x00") {
		return fmt.Errorf("%w: %q", ErrHeaderInjection, r.String())
	}
	if !utf8.ValidString(r.Name) || strings.IndexFunc(r.Name, func(c rune) bool { return c < ' ' || c == 0x7f }) >= 0 {
		return fmt.Errorf("%w: name %q has invalid UTF-8 or control characters", ErrInvalidAddress, r.Name)
	}
	return checkAddress(r.Address)
}

func checkAddress(addr string) error {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || len(addr) > 254 || !utf8.ValidString(addr) ||
		strings.ContainsAny(addr, " \t<>()[],;:\\\"") {
		return fmt.Errorf("%w: %q", ErrInvalidAddress, addr)
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > 64 || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") ||
		strings.IndexFunc(local, func(c rune) bool { return c < utf8.RuneSelf && !isAtext(byte(c)) && c != '.' }) >= 0 {
		return fmt.Errorf("%w: %q (local part)", ErrInvalidAddress, addr)
	}
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil || !validDomain(ascii) {
		return fmt.Errorf("%w: %q (domain)", ErrInvalidAddress, addr)
	}
	return nil
}

// isAtext reports whether c may appear in an RFC 5322 dot-atom (quoted
// local parts are not supported).
func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// validDomain checks RFC 1035 host syntax: at least two labels (or
// localhost) of letters, digits and inner hyphens.
func validDomain(d string) bool {
	labels := strings.Split(d, ".")
	if len(labels) < 2 && d != "localhost" {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// asciiAddress returns addr with an IDN domain in punycode. A non-ASCII
// local part cannot be converted: that is ErrSMTPUTF8Unsupported.
func asciiAddress(addr string) (string, error) {
	if isASCII(addr) {
		return addr, nil
	}
	at := strings.LastIndexByte(addr, '@')
	if !isASCII(addr[:at]) {
		return "", fmt.Errorf("%w: %q has a non-ASCII local part", ErrSMTPUTF8Unsupported, addr)
	}
	domain, err := idna.Lookup.ToASCII(addr[at+1:])
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrInvalidAddress, addr, err)
	}
	return addr[:at+1] + domain, nil
}

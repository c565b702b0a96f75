package mailer

import (
	"fmt"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"unicode"
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
		return Recipient{}, fmt.Errorf("%w: %s", ErrHeaderInjection, quoteCut(s))
	}
	s = strings.TrimSpace(s)
	if isGroup(s) {
		return Recipient{}, fmt.Errorf("%w: %s is a group, not a mailbox", ErrInvalidAddress, quoteCut(s))
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
	return Recipient{}, fmt.Errorf("%w: %s", ErrInvalidAddress, quoteCut(s))
}

// ParseRecipientList parses a comma-separated list of mailboxes, each in
// a form ParseRecipient accepts.
func ParseRecipientList(s string) ([]Recipient, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		return nil, fmt.Errorf("%w: %s", ErrHeaderInjection, quoteCut(s))
	}
	if isGroup(s) {
		return nil, fmt.Errorf("%w: %s contains a group", ErrInvalidAddress, quoteCut(s))
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

// validate checks the name for injection and control characters and the
// address with checkAddress.
func (r Recipient) validate() error {
	if strings.ContainsAny(r.Name, "\r\n\x00") {
		return fmt.Errorf("%w: name %s", ErrHeaderInjection, quoteCut(r.Name))
	}
	if !utf8.ValidString(r.Name) || strings.IndexFunc(r.Name, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: name %s has invalid UTF-8 or a control character", ErrInvalidAddress, quoteCut(r.Name))
	}
	return checkAddress(r.Address)
}

// checkAddress is the rule for every address the package sends, in a header
// or in MAIL FROM and RCPT TO: a dot-atom local part of ASCII atext and, as
// RFC 6531 allows, UTF-8 beyond ASCII; "@"; a domain name, IDN allowed.
// Quoted local parts and address literals are not supported. CR, LF or NUL
// is ErrHeaderInjection; anything else wrong, a control character or white
// space included, is ErrInvalidAddress.
func checkAddress(addr string) error {
	if strings.ContainsAny(addr, "\r\n\x00") {
		return fmt.Errorf("%w: %s", ErrHeaderInjection, quoteCut(addr))
	}
	invalid := func(why string) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidAddress, quoteCut(addr), why)
	}
	// RFC 5321 4.5.3.1.3: a path is at most 256 octets, "<" and ">"
	// included. That keeps the domain within 4.5.3.1.2's 255 octets too.
	if len(addr) > 254 {
		return invalid("longer than 254 octets")
	}
	if !utf8.ValidString(addr) || strings.IndexFunc(addr, func(c rune) bool { return unicode.IsControl(c) || unicode.IsSpace(c) }) >= 0 {
		return invalid("invalid UTF-8, a control character or white space")
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return invalid("want local-part@domain")
	}
	local, domain := addr[:at], addr[at+1:]
	// RFC 5321 4.5.3.1.1: a local part is at most 64 octets.
	if len(local) > 64 {
		return invalid("local part longer than 64 octets")
	}
	if strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") ||
		strings.IndexFunc(local, func(c rune) bool { return c < utf8.RuneSelf && !isAtext(byte(c)) && c != '.' }) >= 0 {
		return invalid("local part is not a dot-atom")
	}
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil || !validDomain(ascii) {
		return invalid("bad domain")
	}
	// Without SMTPUTF8 the domain is sent as A-labels, which must fit too.
	if len(local)+1+len(ascii) > 254 {
		return invalid("longer than 254 octets with the domain in A-labels")
	}
	return nil
}

// quoteCut returns s quoted for an error message, cut after 100 bytes so
// that a huge value does not make a huge error.
func quoteCut(s string) string {
	const limit = 100
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	n := limit
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strconv.Quote(s[:n]) + "..."
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
		return "", fmt.Errorf("%w: %s has a non-ASCII local part", ErrSMTPUTF8Unsupported, quoteCut(addr))
	}
	domain, err := idna.Lookup.ToASCII(addr[at+1:])
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrInvalidAddress, quoteCut(addr), err)
	}
	return addr[:at+1] + domain, nil
}

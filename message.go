package mailer

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Envelope is the SMTP envelope: the MAIL FROM address and the RCPT TO
// addresses, bare (no names, no angle brackets). The empty From is the
// null reverse-path used by bounces.
type Envelope struct {
	From string
	To   []string

	// DSN asks for delivery status notifications (RFC 3461); nil asks
	// for none.
	DSN *DSN
	// RequireTLS asks, with REQUIRETLS (RFC 8689), that the message
	// travel over verified TLS on every hop or bounce. The server must
	// announce REQUIRETLS and the session must be TLS with a verified
	// certificate, or the send fails with ErrExtensionUnsupported before
	// anything is sent.
	RequireTLS bool
	// Delivery chooses between all-or-nothing and partial delivery for
	// this message; DeliveryDefault follows WithPartialDelivery.
	Delivery DeliveryPolicy
}

// Priority is a message's importance, rendered as X-Priority and
// Importance headers.
type Priority int

const (
	// PriorityNormal adds no header.
	PriorityNormal Priority = iota
	// PriorityHigh is X-Priority 1, Importance high.
	PriorityHigh
	// PriorityLow is X-Priority 5, Importance low.
	PriorityLow
)

// Header is a header field of the caller's.
type Header struct {
	Name, Value string
	// Raw writes Value exactly as given, for a value that is already
	// correct RFC 5322 (a structured field such as Authentication-Results,
	// a precomputed signature): no RFC 2047 encoding, no folding. It must
	// be printable ASCII with spaces and tabs, folded, if at all, with
	// CRLF followed by a space or tab, each line at most 998 characters.
	Raw bool
}

// Message is an e-mail to send. Fill in the fields, add attachments with
// the Attach methods, and pass it to Connection.Send. Rendering never
// changes the Message, so one Message may be sent by many goroutines at
// once (attachments from an io.Reader excepted: a reader can be read once).
type Message struct {
	From    Recipient
	Sender  Recipient // the agent sending for From, if not From itself
	ReplyTo []Recipient
	To      []Recipient
	Cc      []Recipient
	Bcc     []Recipient // in the envelope only, never in the header

	Subject string
	Text    string // the plain-text body
	HTML    string // the HTML body; with Text, the message is multipart/alternative

	Date       time.Time // zero means the time of sending
	MessageID  string    // without angle brackets; "" means a random one at From's domain
	InReplyTo  string    // a Message-ID, without angle brackets
	References []string  // Message-IDs, without angle brackets
	Priority   Priority

	// ListUnsubscribe holds the URIs (https: or mailto:) of the
	// List-Unsubscribe header; with ListUnsubscribeOneClick the header
	// List-Unsubscribe-Post: List-Unsubscribe=One-Click is added (RFC 8058).
	ListUnsubscribe         []string
	ListUnsubscribeOneClick bool

	// Headers are added after the standard fields. A name the package
	// sets itself (From, Subject, Content-Type...) is an error: use the
	// field instead.
	Headers []Header

	// DSN, RequireTLS and Delivery are the delivery options of the
	// envelope derived from From, To, Cc and Bcc; see Envelope. With
	// Message.Envelope set, its own apply and setting these too is an
	// error.
	DSN        *DSN
	RequireTLS bool
	Delivery   DeliveryPolicy

	// Envelope, if set, replaces the envelope derived from From, To, Cc
	// and Bcc.
	Envelope *Envelope

	// Calendar, if set, makes the message a calendar invitation (or
	// cancellation, reply...): see Calendar.
	Calendar *Calendar

	// DKIM, if set, signs this message with these signatures instead of
	// the Connection's (WithDKIM).
	DKIM []DKIM

	attachments []*Attachment
}

// managedHeaders are the fields the package writes; custom headers may not
// repeat them.
var managedHeaders = map[string]bool{
	"from": true, "sender": true, "reply-to": true, "to": true, "cc": true, "bcc": true,
	"subject": true, "date": true, "message-id": true, "in-reply-to": true, "references": true,
	"mime-version": true, "content-type": true, "content-transfer-encoding": true,
	"content-disposition": true, "content-id": true, "x-priority": true, "importance": true,
	"list-unsubscribe": true, "list-unsubscribe-post": true,
}

// Validate checks the message before anything is sent: a From address,
// at least one recipient, valid addresses (ErrInvalidAddress), and no CR,
// LF or NUL in any name, address, subject, header, filename or Content-ID
// (ErrHeaderInjection), nor another control character or invalid UTF-8.
// Every value is checked, whatever its name.
func (m *Message) Validate() error {
	if m.From.Address == "" {
		return fmt.Errorf("%w: no From address", ErrInvalidAddress)
	}
	people := append([]Recipient{m.From}, m.ReplyTo...)
	if m.Sender.Address != "" || m.Sender.Name != "" {
		people = append(people, m.Sender)
	}
	people = append(append(append(people, m.To...), m.Cc...), m.Bcc...)
	for _, r := range people {
		if err := r.validate(); err != nil {
			return err
		}
	}
	if m.Envelope == nil && len(m.To)+len(m.Cc)+len(m.Bcc) == 0 {
		return fmt.Errorf("%w: no recipients", ErrInvalidAddress)
	}
	if m.Envelope != nil {
		if m.DSN != nil || m.RequireTLS || m.Delivery != DeliveryDefault {
			return fmt.Errorf("mailer: delivery options set on both Message and Message.Envelope; set them on the Envelope")
		}
		if err := checkEnvelope(*m.Envelope); err != nil {
			return err
		}
	} else if m.DSN != nil {
		var to []string
		for _, r := range append(append(append([]Recipient(nil), m.To...), m.Cc...), m.Bcc...) {
			to = append(to, r.Address)
		}
		if err := m.DSN.check(to); err != nil {
			return err
		}
	}
	if err := checkText("Subject", m.Subject, true); err != nil {
		return err
	}
	for _, id := range append([]string{m.MessageID, m.InReplyTo}, m.References...) {
		if err := checkID("message ID", id); err != nil {
			return err
		}
	}
	for _, u := range m.ListUnsubscribe {
		if err := checkID("List-Unsubscribe URI", u); err != nil {
			return err
		}
	}
	for _, h := range m.Headers {
		if err := checkHeader(h); err != nil {
			return err
		}
	}
	for _, a := range m.attachments {
		if err := a.check(); err != nil {
			return err
		}
	}
	if m.Calendar != nil {
		if err := m.Calendar.check(); err != nil {
			return err
		}
	}
	return checkDKIM(m.DKIM)
}

// delivery returns the message's delivery policy: its envelope's when it
// has one.
func (m *Message) delivery() DeliveryPolicy {
	if m.Envelope != nil {
		return m.Envelope.Delivery
	}
	return m.Delivery
}

// readOnce reports whether an attachment's body comes from a reader that
// can be read only once.
func (m *Message) readOnce() bool {
	for _, a := range m.attachments {
		if a.once {
			return true
		}
	}
	return false
}

// checkText checks a header value: CR, LF or NUL is ErrHeaderInjection,
// and invalid UTF-8 or another control character is an error too, but for
// TAB where tab is set (RFC 5322 unstructured fields allow it).
func checkText(what, v string, tab bool) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("%w: %s %s", ErrHeaderInjection, what, quoteCut(v))
	}
	if !utf8.ValidString(v) || strings.IndexFunc(v, func(c rune) bool { return unicode.IsControl(c) && !(tab && c == '\t') }) >= 0 {
		return fmt.Errorf("mailer: %s %s: invalid UTF-8 or a control character", what, quoteCut(v))
	}
	return nil
}

// checkID checks a value written between angle brackets: a message ID, a
// Content-ID or a URI.
func checkID(what, v string) error {
	if err := checkText(what, v, false); err != nil {
		return err
	}
	if strings.IndexFunc(v, func(c rune) bool { return c == '<' || c == '>' || unicode.IsSpace(c) }) >= 0 {
		return fmt.Errorf("%w: %s %s: give it without angle brackets or spaces", ErrInvalidAddress, what, quoteCut(v))
	}
	return nil
}

// maxHeaderName bounds a custom header's name.
const maxHeaderName = 64

// checkHeader checks a custom field: RFC 5322 3.6.8 allows printable
// ASCII but ':' in names.
func checkHeader(h Header) error {
	if h.Name == "" {
		return fmt.Errorf("mailer: empty header name")
	}
	// RFC 5322 sets no length for a name, but one that fills a line
	// leaves no room to fold the value (go-message's folding panics on
	// it); real names are far shorter.
	if len(h.Name) > maxHeaderName {
		return fmt.Errorf("mailer: header name %s is longer than %d characters", quoteCut(h.Name), maxHeaderName)
	}
	for _, c := range []byte(h.Name) {
		if c < 33 || c > 126 || c == ':' {
			return fmt.Errorf("%w: header name %s is not RFC 5322 field-name syntax", ErrHeaderInjection, quoteCut(h.Name))
		}
	}
	if managedHeaders[strings.ToLower(h.Name)] {
		return fmt.Errorf("mailer: header %q is set from the Message's fields", h.Name)
	}
	if h.Raw {
		return checkRawValue(h.Name, h.Value)
	}
	return checkText("header "+h.Name, h.Value, true)
}

// checkRawValue checks a Raw header value: printable ASCII, spaces and
// tabs; CR and LF only as CRLF followed by white space (folding, RFC 5322
// 2.2.3) with something after it; lines within RFC 5322 2.1.1's 998
// characters.
func checkRawValue(name, v string) error {
	lines := strings.Split(v, "\r\n")
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n\x00") {
			return fmt.Errorf("%w: raw header %s: a CR or LF that is not folding", ErrHeaderInjection, quoteCut(name))
		}
		if i > 0 && (!strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") || strings.TrimLeft(l, " \t") == "") {
			return fmt.Errorf("%w: raw header %s: a line break not followed by folded text", ErrHeaderInjection, quoteCut(name))
		}
		if strings.IndexFunc(l, func(c rune) bool { return (c < ' ' || c > '~') && c != '\t' }) >= 0 {
			return fmt.Errorf("mailer: raw header %s: only printable ASCII, spaces and tabs", quoteCut(name))
		}
		n := len(l)
		if i == 0 {
			n += len(name) + len(": ")
		}
		if n > 998 {
			return fmt.Errorf("mailer: raw header %s: a line longer than 998 characters; fold it", quoteCut(name))
		}
	}
	return nil
}

// prepared is a message fixed for one send: its envelope and the values
// generated for it.
type prepared struct {
	msg       *Message
	envelope  Envelope
	utf8      bool // the envelope needs SMTPUTF8
	smtputf8  bool // the server takes UTF-8 addresses
	messageID string
	date      time.Time
	boundary  string // the random part of the MIME boundaries
}

// prepare fixes what one send needs. Without SMTPUTF8,
// IDN domains become punycode in envelope and header, and a non-ASCII
// local part is an error wrapping ErrSMTPUTF8Unsupported.
// The caller has validated m.
func (m *Message) prepare(smtputf8 bool, fixed stamp) (*prepared, error) {
	p := &prepared{msg: m, messageID: cmp.Or(m.MessageID, fixed.id), date: m.Date, smtputf8: smtputf8}
	if p.date.IsZero() {
		p.date = fixed.date
	}
	if p.date.IsZero() {
		p.date = time.Now()
	}
	if p.messageID == "" {
		p.messageID = newMessageID(m.From.Address)
	}
	b := make([]byte, 12)
	rand.Read(b)
	p.boundary = hex.EncodeToString(b)
	env := Envelope{From: m.From.Address, DSN: m.DSN, RequireTLS: m.RequireTLS, Delivery: m.Delivery}
	if m.Envelope != nil {
		env = *m.Envelope
		env.To = append([]string(nil), m.Envelope.To...)
	} else {
		seen := map[string]bool{}
		for _, r := range append(append(append([]Recipient(nil), m.To...), m.Cc...), m.Bcc...) {
			if key := foldAddress(r.Address); !seen[key] {
				seen[key] = true
				env.To = append(env.To, r.Address)
			}
		}
	}
	var err error
	for i, a := range append([]string{env.From}, env.To...) {
		if !isASCII(a) {
			if smtputf8 {
				p.utf8 = true
				continue
			}
			if a, err = asciiAddress(a); err != nil {
				return nil, err
			}
			if i > 0 {
				env.DSN = env.DSN.renamed(env.To[i-1], a)
			}
		}
		if i == 0 {
			env.From = a
		} else {
			env.To[i-1] = a
		}
	}
	p.envelope = env
	return p, nil
}

// foldAddress returns the form of addr under which duplicates are found:
// the domain is case-insensitive, the local part is not (RFC 5321 2.4).
func foldAddress(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	return addr[:at+1] + strings.ToLower(addr[at+1:])
}

// newMessageID returns a random ID at the domain of from, so that it
// reveals nothing about the sending machine.
func newMessageID(from string) string {
	b := make([]byte, 16)
	rand.Read(b)
	domain := from[strings.LastIndexByte(from, '@')+1:]
	if a, err := asciiAddress("x@" + domain); err == nil {
		domain = a[2:]
	}
	return hex.EncodeToString(b) + "@" + domain
}

// WriteTo renders the message to w as RFC 5322 text with CRLF line ends,
// streaming attachment bodies; Date and Message-ID are generated when
// empty (and not stored back in m). It returns the bytes written.
func (m *Message) WriteTo(w io.Writer) (int64, error) {
	if err := m.Validate(); err != nil {
		return 0, err
	}
	p, err := m.prepare(true, stamp{})
	if err != nil {
		return 0, err
	}
	return p.writeTo(w)
}

// stamp fixes the generated Message-ID and Date of a message across the
// attempts of one send; the zero stamp generates them.
type stamp struct {
	id   string
	date time.Time
}

// newStamp returns a stamp for sending m.
func newStamp(m *Message) stamp {
	st := stamp{id: m.MessageID, date: m.Date}
	if st.id == "" {
		st.id = newMessageID(m.From.Address)
	}
	if st.date.IsZero() {
		st.date = time.Now()
	}
	return st
}

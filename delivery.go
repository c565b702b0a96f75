package mailer

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// DeliveryPolicy chooses, for one message, what happens when the server
// refuses some of its recipients.
type DeliveryPolicy int

const (
	// DeliveryDefault follows the Connection: all-or-nothing, or partial
	// with WithPartialDelivery.
	DeliveryDefault DeliveryPolicy = iota
	// DeliveryAllOrNothing sends nothing when any recipient is refused.
	DeliveryAllOrNothing
	// DeliveryPartial sends to the recipients the server accepted and
	// reports the others in SendResult.Rejected.
	DeliveryPartial
)

// DSNReturn is how much of the message a delivery status notification
// carries (RFC 3461 4.3).
type DSNReturn string

// The values of DSN.Return.
const (
	DSNReturnFull    DSNReturn = "FULL" // the whole message
	DSNReturnHeaders DSNReturn = "HDRS" // its header only
)

// DSNNotify is when a recipient's delivery status notification is sent
// (RFC 3461 4.1).
type DSNNotify string

// The values of DSN.Notify: NEVER alone, or any of the others.
const (
	DSNNever   DSNNotify = "NEVER"
	DSNSuccess DSNNotify = "SUCCESS"
	DSNFailure DSNNotify = "FAILURE"
	DSNDelay   DSNNotify = "DELAY"
)

// DSN asks the server for delivery status notifications (RFC 3461): the
// MAIL parameters RET and ENVID, and NOTIFY and ORCPT on each RCPT. A
// message with a DSN sent to a server that does not announce DSN fails
// with ErrExtensionUnsupported before anything is sent: RFC 3461 lets a
// relay drop the parameters, but a client asking for them wants them
// honoured.
type DSN struct {
	// Return is how much of the message a failure notification carries;
	// "" leaves it to the server.
	Return DSNReturn
	// EnvelopeID is an identifier the notifications quote back (ENVID):
	// printable ASCII, at most 100 characters.
	EnvelopeID string
	// Notify applies to every recipient: NEVER alone, or any of SUCCESS,
	// FAILURE and DELAY; nil leaves it to the server (usually failures
	// and delays).
	Notify []DSNNotify
	// Recipients overrides Notify and sets the original recipient (ORCPT)
	// for some recipients, by envelope address.
	Recipients map[string]DSNRecipient
}

// DSNRecipient is one recipient's part of a DSN.
type DSNRecipient struct {
	// Notify replaces DSN.Notify for this recipient when not nil.
	Notify []DSNNotify
	// OriginalRecipient is the address the sender first gave, if it was
	// rewritten (a list expansion, a forward), sent as ORCPT.
	OriginalRecipient string
}

// check validates d for a message to the envelope recipients to.
func (d *DSN) check(to []string) error {
	switch d.Return {
	case "", DSNReturnFull, DSNReturnHeaders:
	default:
		return fmt.Errorf("mailer: DSN Return %s: want FULL or HDRS", quoteCut(string(d.Return)))
	}
	if len(d.EnvelopeID) > 100 || strings.IndexFunc(d.EnvelopeID, func(r rune) bool { return r < '!' || r > '~' }) >= 0 {
		return fmt.Errorf("%w: DSN EnvelopeID %s: printable ASCII without spaces, at most 100 characters",
			ErrHeaderInjection, quoteCut(d.EnvelopeID))
	}
	if err := checkNotify(d.Notify); err != nil {
		return err
	}
	for addr, r := range d.Recipients {
		if !containsFold(to, addr) {
			return fmt.Errorf("%w: DSN names %s, which is not a recipient", ErrInvalidAddress, quoteCut(addr))
		}
		if err := checkNotify(r.Notify); err != nil {
			return err
		}
		if r.OriginalRecipient != "" {
			if err := checkAddress(r.OriginalRecipient); err != nil {
				return fmt.Errorf("mailer: DSN original recipient: %w", err)
			}
		}
	}
	return nil
}

func checkNotify(n []DSNNotify) error {
	seen := map[DSNNotify]bool{}
	for _, v := range n {
		switch {
		case v != DSNNever && v != DSNSuccess && v != DSNFailure && v != DSNDelay:
			return fmt.Errorf("mailer: DSN Notify %s: want NEVER, SUCCESS, FAILURE or DELAY", quoteCut(string(v)))
		case seen[v], v == DSNNever && len(n) > 1:
			return fmt.Errorf("mailer: DSN Notify %v: NEVER stands alone and no value repeats", n)
		}
		seen[v] = true
	}
	return nil
}

func containsFold(list []string, addr string) bool {
	for _, a := range list {
		if foldAddress(a) == foldAddress(addr) {
			return true
		}
	}
	return false
}

// rcptOptions returns the NOTIFY and ORCPT for recipient addr, as go-smtp
// takes them; nil when there are none.
func (d *DSN) rcptOptions(addr string) *smtp.RcptOptions {
	if d == nil {
		return nil
	}
	o := &smtp.RcptOptions{}
	notify := d.Notify
	for a, r := range d.Recipients {
		if foldAddress(a) != foldAddress(addr) {
			continue
		}
		if r.Notify != nil {
			notify = r.Notify
		}
		if r.OriginalRecipient != "" {
			o.OriginalRecipient = r.OriginalRecipient
			o.OriginalRecipientType = smtp.DSNAddressTypeRFC822
			if !isASCII(r.OriginalRecipient) {
				o.OriginalRecipientType = smtp.DSNAddressTypeUTF8
			}
		}
	}
	for _, n := range notify {
		o.Notify = append(o.Notify, smtp.DSNNotify(n))
	}
	if len(o.Notify) == 0 && o.OriginalRecipient == "" {
		return nil
	}
	return o
}

// The parameters below are written by hand for the pipelined path, in the
// form go-smtp's Client.Mail and Client.Rcpt give them (its encoders are
// not exported).

// mailParams appends tx's MAIL parameters to b.
func (s *session) mailParams(b *strings.Builder, tx *transaction) {
	if s.has("8BITMIME") {
		b.WriteString(" BODY=8BITMIME")
	}
	if s.has("SIZE") && tx.size != 0 {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.FormatInt(tx.size, 10))
	}
	if tx.env.RequireTLS {
		b.WriteString(" REQUIRETLS")
	}
	if tx.utf8 {
		b.WriteString(" SMTPUTF8")
	}
	if d := tx.env.DSN; d != nil {
		if d.Return != "" {
			b.WriteString(" RET=")
			b.WriteString(string(d.Return))
		}
		if d.EnvelopeID != "" {
			b.WriteString(" ENVID=")
			b.WriteString(xtext(d.EnvelopeID))
		}
	}
}

// rcptLine returns the RCPT command for recipient i of tx.
func (s *session) rcptLine(tx *transaction, i int) string {
	to := tx.env.To[i]
	o := tx.env.DSN.rcptOptions(to)
	if o == nil {
		return "RCPT TO:<" + to + ">"
	}
	var b strings.Builder
	b.WriteString("RCPT TO:<")
	b.WriteString(to)
	b.WriteString(">")
	if len(o.Notify) > 0 {
		b.WriteString(" NOTIFY=")
		for j, n := range o.Notify {
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString(string(n))
		}
	}
	if o.OriginalRecipient != "" {
		b.WriteString(" ORCPT=")
		b.WriteString(string(o.OriginalRecipientType))
		b.WriteString(";")
		switch {
		case o.OriginalRecipientType == smtp.DSNAddressTypeRFC822:
			b.WriteString(xtext(o.OriginalRecipient))
		case s.has("SMTPUTF8"):
			b.WriteString(utf8AddrText(o.OriginalRecipient, true))
		default:
			b.WriteString(utf8AddrText(o.OriginalRecipient, false))
		}
	}
	return b.String()
}

// xtext encodes s as RFC 3461 4 xtext: "+" and two hex digits for every
// character outside "!".."~" and for "+" and "=".
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "+%02X", c)
	}
	return b.String()
}

// utf8AddrText encodes s as RFC 6533 utf-8-addr-unitext (keeping non-ASCII
// characters, for a server with SMTPUTF8) or utf-8-addr-xtext.
func utf8AddrText(s string, unitext bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= '!' && r <= '~' && r != '+' && r != '=':
			b.WriteRune(r)
		case unitext && r > 0x7f:
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return b.String()
}

// renamed returns d with its options for recipient from moved to to (an
// address rewritten in punycode), copying rather than changing d.
func (d *DSN) renamed(from, to string) *DSN {
	if d == nil {
		return nil
	}
	key, found := "", false
	for k := range d.Recipients {
		if foldAddress(k) == foldAddress(from) {
			key, found = k, true
			break
		}
	}
	if !found {
		return d
	}
	c := *d
	c.Recipients = make(map[string]DSNRecipient, len(d.Recipients))
	for k, v := range d.Recipients {
		if k != key {
			c.Recipients[k] = v
		}
	}
	c.Recipients[to] = d.Recipients[key]
	return &c
}

// checkDelivery checks the delivery options of env: its DSN.
func checkDelivery(env Envelope) error {
	if env.DSN != nil {
		return env.DSN.check(env.To)
	}
	return nil
}

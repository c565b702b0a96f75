package mailer

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// Calendar is an iCalendar object (RFC 5545) that makes a message a
// calendar invitation, or a cancellation or reply (iTIP, RFC 5546). It is
// rendered the way Outlook and Gmail send and expect invitations: a
// text/calendar part with the method inside the multipart/alternative
// body, beside the text and HTML, and the same object attached as
// invite.ics.
type Calendar struct {
	// Method is the iTIP method: REQUEST (an invitation, the default when
	// empty), CANCEL, REPLY, PUBLISH... It must be the METHOD property of
	// Data.
	Method string
	// Data is the iCalendar object, from BEGIN:VCALENDAR to
	// END:VCALENDAR, as the caller's calendar library wrote it.
	Data []byte
}

// method returns the method, REQUEST by default.
func (c *Calendar) method() string {
	if c.Method == "" {
		return "REQUEST"
	}
	return strings.ToUpper(c.Method)
}

// check validates the calendar: a VCALENDAR object whose METHOD is the
// part's method, a method that is a plain token.
func (c *Calendar) check() error {
	m := c.method()
	if strings.IndexFunc(m, func(r rune) bool { return !(r >= 'A' && r <= 'Z' || r == '-') }) >= 0 {
		return fmt.Errorf("mailer: calendar method %s: letters and '-' only", quoteCut(c.Method))
	}
	// RFC 5545 3.1: a line break followed by a space or tab continues the
	// line; unfolded, each content line stands alone.
	text := strings.ReplaceAll(string(c.Data), "\r\n", "\n")
	text = strings.NewReplacer("\n ", "", "\n\t", "").Replace(text)
	if !strings.HasPrefix(strings.TrimSpace(text), "BEGIN:VCALENDAR") {
		return fmt.Errorf("mailer: calendar data does not start with BEGIN:VCALENDAR")
	}
	var methods []string
	for line := range strings.Lines(text) {
		name, value, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
		if strings.EqualFold(name, "METHOD") {
			methods = append(methods, strings.ToUpper(value))
		}
	}
	switch {
	case len(methods) == 0:
		return fmt.Errorf("mailer: calendar data has no METHOD property; clients want METHOD:%s for an invitation", m)
	case len(methods) > 1:
		return fmt.Errorf("mailer: calendar data has %d METHOD properties; it may have one", len(methods))
	case methods[0] != m:
		return fmt.Errorf("mailer: calendar METHOD:%s but the message says %s", quoteCut(methods[0]), m)
	}
	return nil
}

// open returns the calendar's bytes for a body.
func (c *Calendar) open() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(c.Data)), nil
}

// attachment returns the invite.ics attachment.
func (c *Calendar) attachment() *Attachment {
	return &Attachment{Filename: "invite.ics", ContentType: "application/ics", open: c.open}
}

// calendarPart returns the text/calendar part of the alternative body.
func calendarPart(c *Calendar) *part {
	return &part{header: [][2]string{
		{"Content-Type", "text/calendar; charset=utf-8; method=" + c.method()},
		{"Content-Transfer-Encoding", "base64"},
	}, att: &Attachment{open: c.open}}
}

package mailer

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-message"
)

const testICS = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//example//test//EN\r\nMETHOD:REQUEST\r\n" +
	"BEGIN:VEVENT\r\nUID:meeting-1@example.test\r\nDTSTAMP:20261202T090000Z\r\nDTSTART:20261210T140000Z\r\n" +
	"DTEND:20261210T150000Z\r\nSUMMARY:Planning – ünïcode\r\nORGANIZER;CN=Ann:mailto:ann@example.test\r\n" +
	"ATTENDEE;RSVP=TRUE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"

// pythonInviteScript prints the structure Python's email package sees:
// one line per part, "content-type method filename", and the calendar's
// decoded bytes checked against argv[2].
const pythonInviteScript = `
import sys, email, email.policy
msg = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
want = open(sys.argv[2], 'rb').read()
for part in msg.walk():
    line = [part.get_content_type(), part.get_param('method') or '-', part.get_filename() or '-']
    if part.get_content_type() in ('text/calendar', 'application/ics'):
        line.append('same' if part.get_payload(decode=True) == want else 'DIFFERENT')
    print(' '.join(line))
`

// TestCalendarInvite: Python's email package and go-message both see an
// invitation: text/calendar with method=REQUEST inside the alternative,
// the same object attached as invite.ics.
func TestCalendarInvite(t *testing.T) {
	m := &Message{From: Recipient{Address: "ann@example.test"}, To: []Recipient{{Address: "bob@example.test"}},
		Subject: "Invitation: Planning", Text: "You are invited.", HTML: "<p>You are invited.</p>",
		Calendar: &Calendar{Data: []byte(testICS)}}
	m.AttachBytes("agenda.txt", []byte("1. plans\n"))
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"multipart/mixed - -",
		"multipart/alternative - -",
		"text/plain - -",
		"text/html - -",
		"text/calendar REQUEST - same",
		"text/plain - agenda.txt",
		"application/ics - invite.ics same",
	}
	dir := t.TempDir()
	mf, cf := filepath.Join(dir, "m.eml"), filepath.Join(dir, "c.ics")
	os.WriteFile(mf, b.Bytes(), 0o600)
	os.WriteFile(cf, []byte(testICS), 0o600)
	out, err := exec.Command("/usr/bin/python3", "-c", pythonInviteScript, mf, cf).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	if got := strings.Split(strings.TrimSpace(string(out)), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Python's email package sees:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}

	e, err := message.Read(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	e.Walk(func(path []int, ent *message.Entity, err error) error {
		if err != nil {
			return err
		}
		mt, params, _ := ent.Header.ContentType()
		seen = append(seen, mt+" "+params["method"])
		return nil
	})
	if !strings.Contains(strings.Join(seen, ","), "text/calendar REQUEST") {
		t.Errorf("go-message sees %v", seen)
	}

	// mblaze's mshow, a mail user agent's MIME parser, sees the same tree
	// and decodes the calendar part back to the object.
	if _, err := exec.LookPath("mshow"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mshow (Debian's mblaze) is missing: %v; scripts/install-test-deps installs it", err)
		}
		t.Log("mshow not installed (Debian's mblaze): the tree was checked with Python and go-message only")
	} else {
		tree, err := exec.Command("mshow", "-t", mf).Output()
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, l := range strings.Split(strings.TrimSpace(string(tree)), "\n")[1:] {
			f := strings.Fields(l)
			types = append(types, strings.Join(append(f[1:2], f[3:]...), " "))
		}
		wantTree := []string{"multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/calendar",
			`text/plain name="agenda.txt"`, `application/ics name="invite.ics"`}
		if strings.Join(types, "|") != strings.Join(wantTree, "|") {
			t.Errorf("mshow sees %q, want %q", types, wantTree)
		}
		part, err := exec.Command("mshow", "-O", mf, "5").Output()
		if err != nil || string(part) != testICS {
			t.Errorf("mshow decodes the calendar part as %q (%v)", part, err)
		}
	}

	for name, c := range map[string]*Calendar{
		"no METHOD":    {Data: []byte("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n")},
		"other METHOD": {Method: "CANCEL", Data: []byte(testICS)},
		"not iCal":     {Data: []byte("hello")},
		"bad method":   {Method: "REQ\r\nX", Data: []byte(testICS)},
	} {
		m.Calendar = c
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m.Calendar = &Calendar{Method: "cancel", Data: []byte(strings.Replace(testICS, "METHOD:REQUEST", "METHOD:CANCEL", 1))}
	m.HTML, m.Text = "", ""
	b.Reset()
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Content-Type: text/calendar; charset=utf-8; method=CANCEL") {
		t.Errorf("a cancellation without text:\n%s", b.String())
	}
}

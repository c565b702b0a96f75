package main

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gomailer/mailer"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// multiValueFlags take several values after one flag, as mumailer's
// argparse nargs="*" options do: --to a@x b@x.
var multiValueFlags = map[string]bool{
	"to": true, "cc": true, "bcc": true, "attachment": true, "content-type": true, "header": true,
}

// msgFlags are the flags that describe the message.
type msgFlags struct {
	fs *pflag.FlagSet

	profile      string
	sender       string
	replyTo      []string
	to           []string
	cc           []string
	bcc          []string
	subject      string
	body         string
	bodyFile     string
	html         bool
	date         string
	attachments  []string
	contentTypes []string
	headers      []string
}

// addMsgFlags defines the message flags on fs.
func addMsgFlags(fs *pflag.FlagSet) *msgFlags {
	m := &msgFlags{fs: fs}
	fs.StringVar(&m.profile, "profile-message", "", "YAML profile with a MESSAGE section (mumailer's keys)")
	fs.StringVar(&m.sender, "sender", "", `sender, as "Name address", "Name <address>" or "address"`)
	fs.StringArrayVar(&m.replyTo, "reply-to", nil, "Reply-To address (also --reply_to)")
	fs.StringArrayVar(&m.to, "to", nil, `recipient, "Name address" (the last space splits name and address); repeat the flag or list several after it`)
	fs.StringArrayVar(&m.cc, "cc", nil, "Cc recipient, as --to")
	fs.StringArrayVar(&m.bcc, "bcc", nil, "Bcc recipient, as --to; never shown in the message")
	fs.StringVar(&m.subject, "subject", "", "subject (a text/template with --recipients)")
	fs.StringVar(&m.body, "body", "", "body text (a template with --recipients)")
	fs.StringVar(&m.bodyFile, "body-file", "", "read the body from this file, - for standard input")
	fs.BoolVar(&m.html, "html", false, "the body is HTML")
	fs.StringVar(&m.date, "date", "", "Date header, RFC 5322 or 2006-01-02 15:04:05 (default now)")
	fs.StringArrayVar(&m.attachments, "attachment", nil, "file to attach; repeat for more")
	fs.StringArrayVar(&m.contentTypes, "content-type", nil, "content type for every attachment (once) or for each in order (once per attachment); default: from the file")
	fs.StringArrayVar(&m.headers, "header", nil, "extra header as Name=value; repeat for more")
	return m
}

// mergedMessage is the message's description after merging the profile
// and the flags.
type mergedMessage struct {
	sender                  string
	replyTo, to, cc, bcc    []string
	subject, body, bodyFile string
	html                    bool
	date                    string
	attachments, types      []string
	headers                 []string
}

// merge reads the message profile, if any, and lays the flags over it.
func (m *msgFlags) merge() (*mergedMessage, error) {
	p := &messageProfile{}
	if m.profile != "" {
		var err error
		if p, err = loadMessageProfile(m.profile); err != nil {
			return nil, err
		}
	}
	set := m.fs.Changed
	str := func(flag, flagVal string, prof *string) string {
		if set(flag) || prof == nil {
			return flagVal
		}
		return *prof
	}
	list := func(flag string, flagVal []string, prof stringList) []string {
		if set(flag) {
			return flagVal
		}
		return prof
	}
	r := &mergedMessage{
		sender:      str("sender", m.sender, &p.Sender),
		replyTo:     list("reply-to", m.replyTo, p.ReplyTo),
		to:          list("to", m.to, p.To),
		cc:          list("cc", m.cc, p.Cc),
		bcc:         list("bcc", m.bcc, p.Bcc),
		subject:     str("subject", m.subject, p.Subject),
		body:        str("body", m.body, p.Body),
		bodyFile:    str("body-file", m.bodyFile, &p.BodyFile),
		date:        str("date", m.date, &p.Date),
		attachments: list("attachment", m.attachments, p.Attachments),
		types:       list("content-type", m.contentTypes, p.ContentTypes),
		headers:     list("header", m.headers, p.Headers),
		html:        m.html,
	}
	if !set("html") && p.HTML != nil {
		r.html = bool(*p.HTML)
	}
	if n := len(r.types); n > 1 && n != len(r.attachments) {
		return nil, usageErrorf("%d content types for %d attachments: give one for all, or one per attachment", n, len(r.attachments))
	}
	if r.sender == "" {
		return nil, usageErrorf("no sender: give --sender or --profile-message")
	}
	return r, nil
}

// readBody returns the body from --body-file (standard input for "-") or
// --body.
func (r *mergedMessage) readBody(stdin io.Reader) (string, error) {
	if r.bodyFile == "" {
		return r.body, nil
	}
	var (
		b   []byte
		err error
	)
	if r.bodyFile == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(r.bodyFile)
	}
	if err != nil {
		return "", inputErrorf("reading the body: %v", err)
	}
	return string(b), nil
}

// message builds the library's Message with body as its body and to as
// its To recipients.
func (r *mergedMessage) message(subject, body string, to []string) (*mailer.Message, error) {
	msg := &mailer.Message{Subject: subject}
	var err error
	if msg.From, err = parseRecipient("--sender", r.sender); err != nil {
		return nil, err
	}
	for _, l := range []struct {
		flag string
		src  []string
		dst  *[]mailer.Recipient
	}{{"--reply-to", r.replyTo, &msg.ReplyTo}, {"--to", to, &msg.To}, {"--cc", r.cc, &msg.Cc}, {"--bcc", r.bcc, &msg.Bcc}} {
		for _, s := range l.src {
			rcpt, err := parseRecipient(l.flag, s)
			if err != nil {
				return nil, err
			}
			*l.dst = append(*l.dst, rcpt)
		}
	}
	if r.html {
		msg.HTML = body
	} else {
		msg.Text = body
	}
	if r.date != "" {
		if msg.Date, err = parseDate(r.date); err != nil {
			return nil, err
		}
	}
	for _, h := range r.headers {
		name, value, ok := strings.Cut(h, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, usageErrorf("--header %q: write it as Name=value", h)
		}
		msg.Headers = append(msg.Headers, mailer.Header{Name: strings.TrimSpace(name), Value: value})
	}
	for i, path := range r.attachments {
		a, err := msg.AttachFile(path)
		if err != nil {
			return nil, inputErrorf("%s", oneLine(err))
		}
		switch len(r.types) {
		case 0:
			if a.ContentType, err = detectContentType(path); err != nil {
				return nil, err
			}
		case 1:
			a.ContentType = r.types[0]
		default:
			a.ContentType = r.types[i]
		}
	}
	if err := msg.Validate(); err != nil {
		return nil, dataErrorf("the message is not valid: %s", oneLine(err))
	}
	return msg, nil
}

// parseRecipient parses an address in mumailer's form or RFC 5322's.
func parseRecipient(flag, s string) (mailer.Recipient, error) {
	r, err := mailer.ParseRecipient(s)
	if err != nil {
		return r, dataErrorf("%s %q: %s", flag, s, oneLine(err))
	}
	return r, nil
}

// dateLayouts are the forms DATE and --date accept besides RFC 5322's.
var dateLayouts = []string{time.RFC3339, "2006-01-02 15:04:05Z07:00", "2006-01-02 15:04:05 Z07:00",
	"2006-01-02 15:04:05 -0700", "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"}

// parseDate reads a date in RFC 5322 form, RFC 3339 form or as YAML
// writes a timestamp; without a zone it is local time.
func parseDate(s string) (time.Time, error) {
	if t, err := mail.ParseDate(s); err == nil {
		return t, nil
	}
	for _, layout := range dateLayouts {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usageErrorf("date %q: use RFC 5322 (Mon, 02 Jan 2006 15:04:05 +0000) or 2006-01-02 15:04:05", s)
}

// detectContentType gives the media type of the file at path from its
// extension, else from its first bytes.
func detectContentType(path string) (string, error) {
	if t := mime.TypeByExtension(filepath.Ext(path)); t != "" {
		return t, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", inputErrorf("attaching %v", err)
	}
	defer f.Close()
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return "", inputErrorf("attaching %v", err)
	}
	return http.DetectContentType(head[:n]), nil
}

// newSendCommand returns "mailer send".
func newSendCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "send [flags]",
		Short: "Send a message built from flags and YAML profiles",
		Long: `Send one message built from flags and mumailer's YAML profiles (--profile-smtp,
--profile-message); a flag wins over the profile's key. With --recipients FILE,
send one message per row of a CSV or JSON-lines file, the subject and body
being Go templates over the row's columns ({{.name}}).`,
		Example: `  mailer send --server smtp.example.com:587 --username me@example.com \
    --password-command 'pass show smtp' --sender "Me me@example.com" \
    --to "Foo foo@example.com" --subject Hello --body "Hello world!"`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	conn := addConnFlags(fs)
	msgf := addMsgFlags(fs)
	completeConnFlags(cmd)
	bulk := addBulkFlags(fs)
	verbose := fs.BoolP("verbose", "v", false, "print the Message-ID and the server's reply")
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "reply_to" {
			name = "reply-to"
		}
		return pflag.NormalizedName(name)
	})
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		s, err := conn.resolve(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		m, err := msgf.merge()
		if err != nil {
			return err
		}
		if bulk.recipients != "" {
			return bulk.run(cmd, s, m)
		}
		if len(m.to)+len(m.cc)+len(m.bcc) == 0 {
			return usageErrorf("no recipient: give --to, --cc or --bcc")
		}
		body, err := m.readBody(cmd.InOrStdin())
		if err != nil {
			return err
		}
		msg, err := m.message(m.subject, body, m.to)
		if err != nil {
			return err
		}
		c, err := mailer.NewConnection(s.server, s.all()...)
		if err != nil {
			return configErrorf("%s", oneLine(err))
		}
		defer c.Close()
		res, err := c.Send(context.Background(), msg)
		if err != nil {
			return explain("sending to "+s.server, err)
		}
		if *verbose {
			fmt.Fprintf(cmd.OutOrStdout(), "sent <%s> to %s: %s\n", res.MessageID, strings.Join(res.Accepted, ", "), flatten(res.Response))
		}
		return nil
	}
	return cmd
}

// expandMultiValues rewrites mumailer's "--to a b" into "--to a --to b"
// for the flags in multiValueFlags. send takes no arguments, so every word
// after such a flag's value, up to the next flag, is another value.
func expandMultiValues(argv []string, cmd *cobra.Command) []string {
	out := make([]string, 0, len(argv))
	multi := ""        // the multi-value flag in force, as "--name"
	needValue := false // the previous flag expects this word as its value
	for i, a := range argv {
		switch {
		case a == "--":
			return append(out, argv[i:]...)
		case needValue:
			out = append(out, a)
			needValue = false
		case strings.HasPrefix(a, "-") && a != "-":
			out = append(out, a)
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if name == "reply_to" {
				name = "reply-to"
			}
			multi = ""
			if multiValueFlags[name] && strings.HasPrefix(a, "--") {
				multi = "--" + name
			}
			if f := cmd.Flags().Lookup(name); f != nil && f.NoOptDefVal == "" && !hasValue && strings.HasPrefix(a, "--") {
				needValue = true
			}
		case multi != "":
			out = append(out, multi, a)
		default:
			out = append(out, a)
		}
	}
	return out
}

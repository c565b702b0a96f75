package main

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/gomailer/mailer"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// sendmailOptions are sendmail's own options, parsed by hand: sendmail's
// syntax (-oi, -fsender, -odb) is not GNU's.
type sendmailOptions struct {
	extract    bool     // -t: recipients from To, Cc and Bcc
	ignoreDots bool     // -i, -oi: a line holding one dot is not the end
	sender     string   // -f, -r: the envelope sender
	fullName   string   // -F: the name for a From header we add
	verbose    bool     // -v: the transcript on stderr
	recipients []string // the arguments
	help       bool
}

// sendmailValueOptions take a value, attached or as the next argument;
// those not listed in parseSendmailArgs are accepted and ignored.
const sendmailValueOptions = "fFrBNRVXOCLhp"

// parseSendmailArgs splits args into sendmail's options and the long flags
// for fs, which it then parses.
func parseSendmailArgs(args []string, fs *pflag.FlagSet) (*sendmailOptions, error) {
	o := &sendmailOptions{}
	var long []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			o.recipients = append(o.recipients, args[i+1:]...)
			i = len(args)
		case a == "--help":
			o.help = true
		case strings.HasPrefix(a, "--"):
			name, _, hasValue := strings.Cut(a[2:], "=")
			f := fs.Lookup(name)
			if f == nil {
				return nil, usageErrorf("sendmail: unknown flag %s (see mailer sendmail --help)", a)
			}
			long = append(long, a)
			if !hasValue && f.NoOptDefVal == "" {
				if i+1 >= len(args) {
					return nil, usageErrorf("sendmail: %s needs a value", a)
				}
				i++
				long = append(long, args[i])
			}
		case len(a) > 1 && a[0] == '-':
			opt, rest := a[1], a[2:]
			value := func() (string, error) {
				if rest != "" {
					return rest, nil
				}
				if i+1 >= len(args) {
					return "", usageErrorf("sendmail: -%c needs a value", opt)
				}
				i++
				return args[i], nil
			}
			switch {
			case opt == 't' && rest == "":
				o.extract = true
			case opt == 'i' && rest == "", a == "-oi", a == "-oI":
				o.ignoreDots = true
			case opt == 'v' && rest == "":
				o.verbose = true
			case opt == 'b' && rest != "m":
				return nil, usageErrorf("sendmail: mode %s is not supported: only sending (-bm) is", a)
			case opt == 'b', opt == 'o', opt == 'm', opt == 'n', opt == 'U', opt == 'e':
				// Delivery modes, queue options, aliasing: nothing to do for
				// a client that hands the message to a server.
			case strings.IndexByte(sendmailValueOptions, opt) >= 0:
				v, err := value()
				if err != nil {
					return nil, err
				}
				switch opt {
				case 'f', 'r':
					o.sender = v
				case 'F':
					o.fullName = v
				}
			default:
				return nil, usageErrorf("sendmail: unknown option %s (see mailer sendmail --help)", a)
			}
		default:
			o.recipients = append(o.recipients, a)
		}
	}
	if err := fs.Parse(long); err != nil {
		return nil, usageErrorf("sendmail: %v", err)
	}
	return o, nil
}

// newSendmailCommand returns "mailer sendmail".
func newSendmailCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sendmail [-t] [-i] [-f sender] [flags] [recipients...]",
		Short: "Send the message on standard input, like sendmail",
		Long: `Read a complete message (header, blank line, body) on standard input and send
it to the recipients given as arguments, through the server the flags or the
SMTP profile name. Exit codes are sendmail's (sysexits.h): 75 means try later.

sendmail options:
  -t          also send to the To, Cc and Bcc addresses of the header
  -i, -oi     a line holding only "." does not end the message
  -f sender   envelope sender (default: --sender, else the From address)
  -F name     full name for the From header added when there is none
  -v          print the SMTP conversation (as --debug)
  other -o.., -od.., -B, -N, -R, -V are accepted and ignored

A Bcc header is never sent. A message without From or Date gets them.`,
		Example:            `  git send-email --sendmail-cmd='mailer sendmail --profile-smtp ~/.config/mailer/smtp.yaml' 0001-*.patch`,
		DisableFlagParsing: true,
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	conn := addConnFlags(fs)
	completeConnFlags(cmd)
	fallbackSender := fs.String("sender", "", "envelope sender when -f is not given")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		o, err := parseSendmailArgs(args, fs)
		if err != nil {
			return err
		}
		if o.help {
			return cmd.Help()
		}
		conn.debug = conn.debug || o.verbose
		s, err := conn.resolve(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return inputErrorf("reading the message: %v", err)
		}
		if !o.ignoreDots {
			raw = cutAtDot(raw)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			return dataErrorf("sendmail: no message on standard input")
		}
		m := splitMessage(raw)
		env, err := o.envelope(m, *fallbackSender)
		if err != nil {
			return err
		}
		if strings.ContainsAny(o.fullName, "\r\n") {
			return dataErrorf("sendmail: -F: a line break in the name")
		}
		m.remove("Bcc", "Resent-Bcc")
		if !m.has("From") && env.From != "" {
			m.add("From", mailer.Recipient{Name: o.fullName, Address: env.From}.String())
		}
		if !m.has("Date") {
			m.add("Date", time.Now().Format(time.RFC1123Z))
		}

		c, err := mailer.NewConnection(s.server, s.all()...)
		if err != nil {
			return configErrorf("%s", oneLine(err))
		}
		defer c.Close()
		if _, err := c.SendRaw(context.Background(), env, bytes.NewReader(m.bytes())); err != nil {
			return explain("sendmail: sending to "+s.server, err)
		}
		return nil
	}
	return cmd
}

// envelope derives the envelope: the sender from -f, else fallback (the
// --sender flag), else the From header; the recipients from the arguments
// and, with -t, the To, Cc and Bcc headers.
func (o *sendmailOptions) envelope(m *rawMessage, fallback string) (mailer.Envelope, error) {
	env := mailer.Envelope{From: cmp.Or(o.sender, fallback)}
	if env.From == "" {
		if from, err := m.addresses("From"); err == nil && len(from) > 0 {
			env.From = from[0]
		}
	}
	switch env.From {
	case "":
		return env, usageErrorf("sendmail: no sender: give -f, --sender or a From header")
	case "<>":
		env.From = "" // the null sender of bounces
	default:
		if a, err := mail.ParseAddress(env.From); err == nil {
			env.From = a.Address
		}
	}
	for _, r := range o.recipients {
		addrs, err := parseAddressList(r)
		if err != nil {
			return env, dataErrorf("sendmail: recipient %q: %v", r, err)
		}
		env.To = appendNew(env.To, addrs...)
	}
	if o.extract {
		for _, name := range []string{"To", "Cc", "Bcc"} {
			addrs, err := m.addresses(name)
			if err != nil {
				return env, dataErrorf("sendmail: %s header: %v", name, err)
			}
			env.To = appendNew(env.To, addrs...)
		}
	}
	if len(env.To) == 0 {
		return env, usageErrorf("sendmail: no recipients: give them as arguments, or -t to read the header")
	}
	return env, nil
}

// cutAtDot ends the message at a line holding a single dot, as sendmail
// does without -i.
func cutAtDot(b []byte) []byte {
	for start := 0; start < len(b); {
		end := bytes.IndexByte(b[start:], '\n')
		line := b[start:]
		if end >= 0 {
			line = b[start : start+end]
		}
		if string(bytes.TrimSuffix(line, []byte("\r"))) == "." {
			return b[:start]
		}
		if end < 0 {
			break
		}
		start += end + 1
	}
	return b
}

// headerField is one field of a message's header, kept as it came (folded
// lines and line ends included) so that what is sent is what was given.
type headerField struct {
	name string
	raw  []byte
}

// rawMessage is a message split into its header fields and its body.
type rawMessage struct {
	fields []headerField
	eol    string // the line end the message uses
	body   []byte // everything after the header, the blank line included
}

// splitMessage splits b into header fields and body. Lines before the
// first blank line that are not header fields start the body, as
// sendmail treats a message without a header; an mbox "From " line is
// dropped.
func splitMessage(b []byte) *rawMessage {
	m := &rawMessage{eol: "\n"}
	if i := bytes.IndexByte(b, '\n'); i > 0 && b[i-1] == '\r' {
		m.eol = "\r\n"
	}
	if bytes.HasPrefix(b, []byte("From ")) {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	for len(b) > 0 {
		end := bytes.IndexByte(b, '\n') + 1
		if end == 0 {
			end = len(b)
		}
		line := b[:end]
		trimmed := bytes.TrimRight(line, "\r\n")
		switch {
		case len(trimmed) == 0:
			m.body = b
			return m
		case (line[0] == ' ' || line[0] == '\t') && len(m.fields) > 0:
			last := &m.fields[len(m.fields)-1]
			last.raw = append(last.raw, line...)
		default:
			name, _, ok := bytes.Cut(trimmed, []byte(":"))
			if !ok || !validFieldName(name) {
				m.body = append([]byte(m.eol), b...)
				return m
			}
			m.fields = append(m.fields, headerField{name: string(name), raw: append([]byte(nil), line...)})
		}
		b = b[end:]
	}
	m.body = []byte(m.eol)
	return m
}

// validFieldName reports whether name is an RFC 5322 field name.
func validFieldName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// values returns the unfolded values of the fields called name.
func (m *rawMessage) values(name string) []string {
	var vs []string
	for _, f := range m.fields {
		if strings.EqualFold(f.name, name) {
			_, v, _ := bytes.Cut(f.raw, []byte(":"))
			v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
			v = bytes.ReplaceAll(v, []byte("\n"), nil)
			vs = append(vs, strings.TrimSpace(string(v)))
		}
	}
	return vs
}

// addresses returns the bare addresses of the fields called name.
func (m *rawMessage) addresses(name string) ([]string, error) {
	var out []string
	for _, v := range m.values(name) {
		if v == "" {
			continue
		}
		addrs, err := parseAddressList(v)
		if err != nil {
			return nil, err
		}
		out = append(out, addrs...)
	}
	return out, nil
}

func (m *rawMessage) has(name string) bool { return len(m.values(name)) > 0 }

// remove drops every field with one of the names.
func (m *rawMessage) remove(names ...string) {
	m.fields = slices.DeleteFunc(m.fields, func(f headerField) bool {
		for _, n := range names {
			if strings.EqualFold(f.name, n) {
				return true
			}
		}
		return false
	})
}

// add appends a field.
func (m *rawMessage) add(name, value string) {
	m.fields = append(m.fields, headerField{name: name, raw: []byte(name + ": " + value + m.eol)})
}

// bytes returns the message as it is to be sent.
func (m *rawMessage) bytes() []byte {
	var b bytes.Buffer
	for _, f := range m.fields {
		b.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			b.WriteString(m.eol)
		}
	}
	b.Write(m.body)
	return b.Bytes()
}

// parseAddressList returns the bare addresses of an RFC 5322 address list
// (groups included), or of a list of bare addresses.
func parseAddressList(s string) ([]string, error) {
	list, err := mail.ParseAddressList(s)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out, nil
}

// appendNew appends the addresses of add not already in list.
func appendNew(list []string, add ...string) []string {
	for _, a := range add {
		if !slices.ContainsFunc(list, func(have string) bool { return strings.EqualFold(have, a) }) {
			list = append(list, a)
		}
	}
	return list
}

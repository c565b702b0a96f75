package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gomailer/mailer"
	"github.com/spf13/cobra"
)

// checkReport is what check finds out; --json prints it as it is.
type checkReport struct {
	Server         string            `json:"server"`
	Greeting       string            `json:"greeting,omitempty"`
	Security       string            `json:"security,omitempty"` // "STARTTLS", "TLS" or "none"
	TLS            *tlsReport        `json:"tls,omitempty"`
	Extensions     map[string]string `json:"extensions,omitempty"`
	AuthMechanisms []string          `json:"auth_mechanisms,omitempty"`
	Login          *loginReport      `json:"login,omitempty"`
	Error          string            `json:"error,omitempty"`
}

type tlsReport struct {
	Version      string       `json:"version"`
	CipherSuite  string       `json:"cipher_suite"`
	Certificates []certReport `json:"certificates"`
}

type certReport struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	IPs       []string  `json:"ip_addresses,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DaysLeft  int       `json:"days_left"`
}

type loginReport struct {
	User  string `json:"user"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// newCheckCommand returns "mailer check".
func newCheckCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check --server host:port [flags]",
		Short: "Show what a server offers and whether a login works",
		Long: `Connect to the server (through --proxy when given) and print its greeting, the
EHLO extensions, the TLS version, cipher suite and certificate chain with
expiry dates, the authentication mechanisms offered and, with --username and a
password, whether the login works. Nothing is sent. The exit code is 0 when
everything worked, else the one mailer send would give.`,
		Example: `  mailer check --server smtp.example.com:587
  mailer check --server smtp.example.com:465 --username me --password-command 'pass smtp' --json`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	conn := addConnFlags(fs)
	completeConnFlags(cmd)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		s, err := conn.resolve(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		rep, failure := probe(s)
		out := cmd.OutOrStdout()
		if *asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		} else {
			printReport(out, rep)
		}
		if failure != nil {
			return failure
		}
		return nil
	}
	return cmd
}

// probe opens one session without credentials to see what the server
// offers, then, given a user name, a second one to try the login.
func probe(s *settings) (*checkReport, *exitError) {
	ctx := context.Background()
	rep := &checkReport{Server: s.server}
	var transcript bytes.Buffer
	w := io.Writer(&transcript)
	if s.debug != nil {
		w = io.MultiWriter(&transcript, s.debug)
	}
	c, err := mailer.NewConnection(s.server, append(slices.Clone(s.options), mailer.WithDebugWriter(w, false))...)
	if err != nil {
		return rep, &exitError{code: exConfig, msg: oneLine(err)}
	}
	err = c.Connect(ctx)
	rep.Greeting, rep.Security, rep.Extensions = fromTranscript(transcript.Bytes())
	if exts := c.Extensions(); exts != nil {
		rep.Extensions = exts
	}
	rep.AuthMechanisms = c.AuthMechanisms()
	if state, ok := c.TLSConnectionState(); ok {
		rep.TLS = describeTLS(state)
	} else if err == nil {
		rep.Security = "none"
	} else if rep.Security != "" {
		rep.Security += " (failed)"
	}
	c.Close()
	if err != nil {
		e := explain("connecting to "+s.server, err)
		rep.Error = e.msg
		return rep, e
	}
	if s.username == "" {
		return rep, nil
	}
	rep.Login = &loginReport{User: s.username}
	c, err = mailer.NewConnection(s.server, s.all()...)
	if err != nil {
		return rep, &exitError{code: exConfig, msg: oneLine(err)}
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		e := explain("logging in to "+s.server+" as "+s.username, err)
		rep.Login.Error = e.msg
		return rep, e
	}
	rep.Login.OK = true
	return rep, nil
}

// fromTranscript reads a transcript written by WithDebugWriter for what
// the library does not report: the greeting (the server's lines before the
// client's first), whether STARTTLS was used, and the extensions of the
// last EHLO reply, which it reports only for a session that was set up.
func fromTranscript(t []byte) (greeting, security string, exts map[string]string) {
	var lines []string
	var last string // the client's last command
	n := 0          // reply lines to the last EHLO
	sc := bufio.NewScanner(bytes.NewReader(t))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "C: "):
			last = strings.ToUpper(strings.TrimPrefix(line, "C: "))
			if last == "STARTTLS" {
				security = "STARTTLS"
			}
			if strings.HasPrefix(last, "EHLO") {
				exts, n = map[string]string{}, 0
			}
		case strings.HasPrefix(line, "S: ") && last == "":
			lines = append(lines, strings.TrimPrefix(line, "S: "))
		case strings.HasPrefix(line, "S: 250") && len(line) > 7 && strings.HasPrefix(last, "EHLO"):
			// The first line names the server; the others are keywords.
			if n++; n > 1 {
				kw, param, _ := strings.Cut(line[7:], " ")
				exts[strings.ToUpper(kw)] = param
			}
		}
	}
	return strings.Join(lines, " / "), security, exts
}

// describeTLS summarises a TLS connection and its certificate chain.
func describeTLS(st tls.ConnectionState) *tlsReport {
	r := &tlsReport{Version: tls.VersionName(st.Version), CipherSuite: tls.CipherSuiteName(st.CipherSuite)}
	chain := st.PeerCertificates
	if len(st.VerifiedChains) > 0 {
		chain = st.VerifiedChains[0]
	}
	for _, cert := range chain {
		cr := certReport{
			Subject:   cert.Subject.String(),
			Issuer:    cert.Issuer.String(),
			DNSNames:  cert.DNSNames,
			NotBefore: cert.NotBefore.UTC(),
			NotAfter:  cert.NotAfter.UTC(),
			DaysLeft:  int(time.Until(cert.NotAfter).Hours() / 24),
		}
		for _, ip := range cert.IPAddresses {
			cr.IPs = append(cr.IPs, ip.String())
		}
		r.Certificates = append(r.Certificates, cr)
	}
	return r
}

// printReport writes the report for a person, one fact a line.
func printReport(w io.Writer, r *checkReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	line("server", r.Server)
	if r.Greeting != "" {
		line("greeting", r.Greeting)
	}
	if r.Security == "" && r.TLS != nil {
		r.Security = "TLS"
	}
	if r.Security != "" {
		line("security", r.Security)
	}
	if r.TLS != nil {
		line("tls", r.TLS.Version+", "+r.TLS.CipherSuite)
		for i, c := range r.TLS.Certificates {
			names := slices.Concat(c.DNSNames, c.IPs)
			desc := c.Subject
			if len(names) > 0 {
				desc += " (" + strings.Join(names, ", ") + ")"
			}
			desc += fmt.Sprintf(", expires %s (%d days), issuer %s", c.NotAfter.Format(time.DateOnly), c.DaysLeft, c.Issuer)
			key := ""
			if i == 0 {
				key = "certificate"
			}
			line(key, desc)
		}
	}
	if len(r.Extensions) > 0 {
		var exts []string
		for _, k := range slices.Sorted(maps.Keys(r.Extensions)) {
			exts = append(exts, strings.TrimSpace(k+" "+r.Extensions[k]))
		}
		line("extensions", strings.Join(exts, ", "))
	}
	if r.Extensions != nil {
		auth := "none offered"
		if len(r.AuthMechanisms) > 0 {
			auth = strings.Join(r.AuthMechanisms, " ")
		}
		line("auth", auth)
	}
	if r.Login != nil {
		if r.Login.OK {
			line("login", "ok as "+r.Login.User)
		} else {
			line("login", "failed as "+r.Login.User)
		}
	}
	tw.Flush()
}

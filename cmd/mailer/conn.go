package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gomailer/mailer"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// connFlags are the flags that say how to reach the server and log in,
// shared by send, sendmail and check.
type connFlags struct {
	fs *pflag.FlagSet

	profile         string
	server          string
	port            int
	username        string
	password        string
	passwordCommand string
	passwordFile    string
	passwordEnv     string
	encryption      string
	ciphers         string
	security        string
	timeout         seconds
	greetingTimeout seconds
	proxy           string
	auth            []string
	tlsCA           string
	insecureAuth    bool
	localName       string
	debug           bool
}

// addConnFlags defines the connection flags on fs.
func addConnFlags(fs *pflag.FlagSet) *connFlags {
	c := &connFlags{fs: fs}
	fs.StringVar(&c.profile, "profile-smtp", "", "YAML profile with an SMTP section (mumailer's keys)")
	fs.StringVar(&c.server, "server", "", "SMTP server, as host or host:port")
	fs.IntVar(&c.port, "port", 0, "SMTP port (default 465 for --security tls, else 587)")
	fs.StringVar(&c.username, "username", "", "user name to log in with")
	fs.StringVar(&c.password, "password", "", "password (other users can see it: prefer --password-command, --password-file or MAILER_PASSWORD)")
	fs.StringVar(&c.passwordCommand, "password-command", "", "shell command that prints the password")
	fs.StringVar(&c.passwordFile, "password-file", "", "file holding the password; must not be readable by group or others")
	fs.StringVar(&c.passwordEnv, "password-env", "", "environment variable holding the password (MAILER_PASSWORD is read when no other source is given)")
	fs.StringVar(&c.encryption, "encryption", "", "mumailer's protocol name: SSLv23, TLS, TLS_CLIENT, TLSv1, TLSv1_1, TLSv1_2, TLSv1_3")
	fs.StringVar(&c.ciphers, "ciphers", "", "OpenSSL cipher string or list of suites")
	fs.StringVar(&c.security, "security", "", "auto, none, starttls, starttls-optional or tls (default auto: tls on 465, starttls elsewhere)")
	fs.Var(&c.timeout, "timeout", "how long to wait for the connection and each reply, in seconds or as 1m30s (default 60)")
	fs.Var(&c.greetingTimeout, "greeting-timeout", "how long to wait for the server's greeting (default 30)")
	fs.StringVar(&c.proxy, "proxy", "", "proxy URL: socks5://user:pass@host:1080, socks5h://, socks4://, socks4a://, http://, https://")
	fs.StringSliceVar(&c.auth, "auth", nil, "allowed mechanisms in order of preference: SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of the CA to trust instead of the system's")
	fs.BoolVar(&c.insecureAuth, "insecure-auth", false, "allow PLAIN and LOGIN over an unencrypted connection")
	fs.StringVar(&c.localName, "local-name", "", "name to give in EHLO (default localhost)")
	fs.BoolVar(&c.debug, "debug", false, "print the SMTP conversation to stderr (passwords are never shown)")
	return c
}

// completeConnFlags offers the values of the connection flags that have a
// fixed set to shell completion.
func completeConnFlags(cmd *cobra.Command) {
	for flag, values := range map[string][]string{
		"security":   {"auto", "none", "starttls", "starttls-optional", "tls"},
		"encryption": {"SSLv23", "TLS", "TLS_CLIENT", "TLSv1", "TLSv1_1", "TLSv1_2", "TLSv1_3"},
		"auth":       {mailer.AuthSCRAMSHA256, mailer.AuthSCRAMSHA1, mailer.AuthCRAMMD5, mailer.AuthPlain, mailer.AuthLogin},
	} {
		cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
	}
}

// settings are the connection settings after merging the profile and the
// command line.
type settings struct {
	server   string // host or host:port
	username string
	password string
	options  []mailer.Option // without the credentials and the transcript
	debug    io.Writer       // where --debug sends the transcript, or nil
}

// all returns every option: credentials and transcript included.
func (s *settings) all() []mailer.Option {
	opts := slices.Clone(s.options)
	if s.username != "" {
		opts = append(opts, mailer.WithCredentials(s.username, s.password))
	}
	if s.debug != nil {
		opts = append(opts, mailer.WithDebugWriter(s.debug, false))
	}
	return opts
}

// resolve merges the SMTP profile (if any) with the flags, the flags
// winning, reads the password from its source and builds the library's
// options. stderr receives the transcript when --debug is set.
func (c *connFlags) resolve(stderr io.Writer) (*settings, error) {
	p := &smtpProfile{}
	if c.profile != "" {
		var err error
		if p, err = loadSMTPProfile(c.profile, stderr); err != nil {
			return nil, err
		}
	}
	set := c.fs.Changed
	pick := func(flag, flagVal, profVal string) string {
		if set(flag) {
			return flagVal
		}
		return profVal
	}
	s := &settings{
		server:   pick("server", c.server, p.Server),
		username: pick("username", c.username, p.Username),
	}
	if s.server == "" {
		return nil, usageErrorf("no server: give --server or --profile-smtp")
	}
	var opts []mailer.Option

	port := p.Port
	if set("port") {
		port = c.port
	}
	if port != 0 {
		if host, _, err := net.SplitHostPort(s.server); err == nil {
			// --port overrides the port in host:port.
			s.server = net.JoinHostPort(host, strconv.Itoa(port))
		} else {
			opts = append(opts, mailer.WithPort(port))
		}
	}

	// Security: mumailer's ENCRYPTION (or TLS/SSL), then --security over it.
	ciphers := pick("ciphers", c.ciphers, p.Ciphers)
	switch {
	case set("encryption") || p.Encryption != nil:
		enc := ""
		if p.Encryption != nil {
			enc = *p.Encryption
		}
		opts = append(opts, mailer.WithEncryption(pick("encryption", c.encryption, enc), ciphers))
	case ciphers != "":
		// Ciphers alone keep the default mode: "" would mean no TLS.
		opts = append(opts, mailer.WithEncryption("TLS", ciphers), mailer.WithSecurity(mailer.SecurityAuto))
	}
	if p.SSL != nil && bool(*p.SSL) && !set("encryption") {
		opts = append(opts, mailer.WithSecurity(mailer.SecurityTLS))
	} else if p.TLS != nil && bool(*p.TLS) && !set("encryption") {
		opts = append(opts, mailer.WithSecurity(mailer.SecuritySTARTTLS))
	}
	if sec := pick("security", c.security, p.Security); sec != "" {
		mode, err := parseSecurity(sec)
		if err != nil {
			return nil, err
		}
		opts = append(opts, mailer.WithSecurity(mode))
	}

	timeout := time.Duration(c.timeout)
	if !set("timeout") && p.Timeout != nil {
		timeout = time.Duration(*p.Timeout)
	}
	if timeout > 0 {
		// Like smtplib's timeout, which mumailer's TIMEOUT was: it bounds
		// the connection, the greeting and every reply.
		opts = append(opts, mailer.WithConnectTimeout(timeout), mailer.WithGreetingTimeout(timeout), mailer.WithTimeout(timeout))
	}
	greeting := time.Duration(c.greetingTimeout)
	if !set("greeting-timeout") && p.GreetingTimeout != nil {
		greeting = time.Duration(*p.GreetingTimeout)
	}
	if greeting > 0 {
		opts = append(opts, mailer.WithGreetingTimeout(greeting))
	}

	if raw := pick("proxy", c.proxy, p.Proxy); raw != "" {
		px, err := mailer.ProxyFromURL(raw)
		if err != nil {
			return nil, configErrorf("--proxy: %s", oneLine(err))
		}
		opts = append(opts, mailer.WithProxy(px))
	}
	auth := []string(p.Auth)
	if set("auth") {
		auth = c.auth
	}
	if len(auth) > 0 {
		mechs := make([]string, len(auth))
		for i, a := range auth {
			mechs[i] = strings.ToUpper(strings.TrimSpace(a))
		}
		opts = append(opts, mailer.WithAuthMechanisms(mechs...))
	}
	if ca := pick("tls-ca", c.tlsCA, p.TLSCA); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, configErrorf("--tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configErrorf("--tls-ca: no PEM certificate in %s", ca)
		}
		opts = append(opts, mailer.WithTLSConfig(&tls.Config{RootCAs: pool}))
	}
	if c.insecureAuth {
		opts = append(opts, mailer.WithInsecureAuth())
	}
	if name := pick("local-name", c.localName, p.LocalName); name != "" {
		opts = append(opts, mailer.WithLocalName(name))
	}
	if c.debug {
		s.debug = stderr
	}
	if err := c.resolvePassword(s, p); err != nil {
		return nil, err
	}
	s.options = opts
	return s, nil
}

// parseSecurity maps a --security name to the library's mode.
func parseSecurity(name string) (mailer.Security, error) {
	switch strings.ToLower(name) {
	case "auto":
		return mailer.SecurityAuto, nil
	case "none", "plain":
		return mailer.SecurityNone, nil
	case "starttls":
		return mailer.SecuritySTARTTLS, nil
	case "starttls-optional":
		return mailer.SecuritySTARTTLSOptional, nil
	case "tls", "ssl", "smtps":
		return mailer.SecurityTLS, nil
	}
	return 0, usageErrorf("--security %q: use auto, none, starttls, starttls-optional or tls", name)
}

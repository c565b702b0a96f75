package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// profileFile is a YAML profile as mumailer reads it: an SMTP section, a
// MESSAGE section, or both, and our OUTBOX section. Other top-level
// sections are ignored; a key that is not known inside these three is an
// error, so that a typo does not go unnoticed.
type profileFile struct {
	SMTP    *smtpProfile    `yaml:"SMTP"`
	Message *messageProfile `yaml:"MESSAGE"`
	Outbox  *outboxProfile  `yaml:"OUTBOX"`
	Other   map[string]any  `yaml:",inline"`
}

// smtpProfile holds mumailer's SMTP keys and ours.
type smtpProfile struct {
	Server     string   `yaml:"SERVER"`
	Port       int      `yaml:"PORT"`
	Username   string   `yaml:"USERNAME"`
	Password   *string  `yaml:"PASSWORD"`
	Timeout    *seconds `yaml:"TIMEOUT"`
	Encryption *string  `yaml:"ENCRYPTION"`
	Ciphers    string   `yaml:"CIPHERS"`
	// TLS and SSL are mumailer 0.x's booleans, before ENCRYPTION.
	TLS *flexBool `yaml:"TLS"`
	SSL *flexBool `yaml:"SSL"`

	Security        string     `yaml:"SECURITY"`
	GreetingTimeout *seconds   `yaml:"GREETING_TIMEOUT"`
	Proxy           string     `yaml:"PROXY"`
	Auth            stringList `yaml:"AUTH"`
	PasswordCommand string     `yaml:"PASSWORD_COMMAND"`
	PasswordFile    string     `yaml:"PASSWORD_FILE"`
	PasswordEnv     string     `yaml:"PASSWORD_ENV"`
	TLSCA           string     `yaml:"TLS_CA"`
	LocalName       string     `yaml:"LOCAL_NAME"`

	// Ours, for send and sendmail: DKIM signing, rate limit, retries.
	DKIMKey      stringList `yaml:"DKIM_KEY"`
	DKIMSelector stringList `yaml:"DKIM_SELECTOR"`
	DKIMDomain   string     `yaml:"DKIM_DOMAIN"`
	Rate         string     `yaml:"RATE"`
	RateBurst    int        `yaml:"RATE_BURST"`
	Retry        int        `yaml:"RETRY"`
}

// messageProfile holds mumailer's MESSAGE keys.
type messageProfile struct {
	Sender       string     `yaml:"SENDER"`
	To           stringList `yaml:"TO"`
	Cc           stringList `yaml:"CC"`
	Bcc          stringList `yaml:"BCC"`
	ReplyTo      stringList `yaml:"REPLY_TO"`
	Subject      *string    `yaml:"SUBJECT"`
	Body         *string    `yaml:"BODY"`
	BodyFile     string     `yaml:"BODY_FILE"`
	HTML         *flexBool  `yaml:"HTML"`
	Date         string     `yaml:"DATE"`
	Attachments  stringList `yaml:"ATTACHMENTS"`
	ContentTypes stringList `yaml:"CONTENT_TYPES"`
	Headers      stringList `yaml:"HEADERS"`
}

// loadProfile reads the YAML profile at path.
func loadProfile(path string) (*profileFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("reading the profile: %v", err)
	}
	var p profileFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, configErrorf("profile %s: %s", path, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return &p, nil
}

// loadSMTPProfile reads the SMTP section of the profile at path, warning
// on stderr when a profile with a password is open to other users.
func loadSMTPProfile(path string, stderr io.Writer) (*smtpProfile, error) {
	p, err := loadProfile(path)
	if err != nil {
		return nil, err
	}
	if p.SMTP == nil {
		return nil, configErrorf("profile %s has no SMTP section", path)
	}
	if p.SMTP.Password != nil {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(stderr, "mailer: warning: %s holds a password and is readable by others (mode %04o): chmod 600 it, or use PASSWORD_COMMAND or PASSWORD_FILE\n",
				path, fi.Mode().Perm())
		}
	}
	return p.SMTP, nil
}

// loadMessageProfile reads the MESSAGE section of the profile at path.
func loadMessageProfile(path string) (*messageProfile, error) {
	p, err := loadProfile(path)
	if err != nil {
		return nil, err
	}
	if p.Message == nil {
		return nil, configErrorf("profile %s has no MESSAGE section", path)
	}
	return p.Message, nil
}

// stringList is a YAML sequence of strings, or a single string.
type stringList []string

// UnmarshalYAML accepts a scalar as a list of one.
func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Tag == "!!null" {
			*l = nil
			return nil
		}
		*l = stringList{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

// flexBool is a YAML boolean, also accepting 0 and 1 as mumailer's
// configparser profiles wrote them.
type flexBool bool

// UnmarshalYAML accepts true/false, yes/no, on/off and 1/0.
func (b *flexBool) UnmarshalYAML(n *yaml.Node) error {
	switch strings.ToLower(n.Value) {
	case "true", "yes", "on", "1":
		*b = true
	case "false", "no", "off", "0", "":
		*b = false
	default:
		return fmt.Errorf("line %d: %q is not a boolean", n.Line, n.Value)
	}
	return nil
}

// seconds is a duration given as a number of seconds (mumailer's TIMEOUT,
// as Python's smtplib takes it) or as a Go duration such as "1m30s". It is
// also a pflag.Value.
type seconds time.Duration

// UnmarshalYAML parses a number of seconds or a duration.
func (s *seconds) UnmarshalYAML(n *yaml.Node) error {
	if err := s.Set(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// Set parses a number of seconds or a Go duration.
func (s *seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f <= 0 {
			return fmt.Errorf("timeout %q: must be positive", v)
		}
		*s = seconds(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("timeout %q: give seconds (30) or a duration (1m30s)", v)
	}
	*s = seconds(d)
	return nil
}

// String returns the duration in Go's form, "" when unset.
func (s *seconds) String() string {
	if s == nil || *s == 0 {
		return ""
	}
	return time.Duration(*s).String()
}

// Type names the flag's value in help.
func (s *seconds) Type() string { return "seconds" }

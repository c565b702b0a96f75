package mailer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Security says how a connection is protected.
type Security int

const (
	// SecurityAuto, the default, is SecurityTLS on port 465 and
	// SecuritySTARTTLS on every other port.
	SecurityAuto Security = iota
	// SecurityNone sends everything in clear text. Passwords are then
	// refused unless WithInsecureAuth is given.
	SecurityNone
	// SecuritySTARTTLS upgrades the connection with STARTTLS (RFC 3207)
	// and fails with ErrTLSRequired, before anything is sent, if the
	// server does not offer it.
	SecuritySTARTTLS
	// SecuritySTARTTLSOptional upgrades with STARTTLS when the server
	// offers it and goes on in clear text when it does not. Anyone on the
	// path can strip the offer: use it only where encryption is a bonus.
	SecuritySTARTTLSOptional
	// SecurityTLS speaks TLS from the first byte (implicit TLS, "SMTPS",
	// usually port 465).
	SecurityTLS
)

// String returns the mode's Go name without the prefix, such as "STARTTLS".
func (s Security) String() string {
	switch s {
	case SecurityAuto:
		return "Auto"
	case SecurityNone:
		return "None"
	case SecuritySTARTTLS:
		return "STARTTLS"
	case SecuritySTARTTLSOptional:
		return "STARTTLSOptional"
	case SecurityTLS:
		return "TLS"
	}
	return fmt.Sprintf("Security(%d)", int(s))
}

func (s Security) defaultPort() int {
	switch s {
	case SecurityTLS:
		return 465
	case SecurityNone:
		return 25
	}
	return 587
}

// resolve turns SecurityAuto into the mode for port.
func (s Security) resolve(port int) Security {
	if s != SecurityAuto {
		return s
	}
	if port == 465 {
		return SecurityTLS
	}
	return SecuritySTARTTLS
}

// protocols maps mumailer's (Python ssl module) protocol names onto a
// security mode and a TLS version range. In mumailer every "TLS*" name
// meant STARTTLS with that protocol, and "SSLv23" meant implicit TLS with
// any version the two sides share.
var protocols = map[string]struct {
	security       Security
	minTLS, maxTLS uint16
}{
	"":           {SecurityNone, 0, 0},
	"SSLv23":     {SecurityTLS, 0, 0},
	"TLS":        {SecuritySTARTTLS, 0, 0},
	"TLS_CLIENT": {SecuritySTARTTLS, 0, 0},
	"TLSv1":      {SecuritySTARTTLS, tls.VersionTLS10, tls.VersionTLS10},
	"TLSv1_1":    {SecuritySTARTTLS, tls.VersionTLS11, tls.VersionTLS11},
	"TLSv1_2":    {SecuritySTARTTLS, tls.VersionTLS12, tls.VersionTLS12},
	"TLSv1_3":    {SecuritySTARTTLS, tls.VersionTLS13, tls.VersionTLS13},
}

func (c *config) setEncryption(protocol, ciphers string, unsafe bool) error {
	if protocol == "TLS_SERVER" {
		return errors.New(`mailer: encryption protocol "TLS_SERVER" is for servers; a client uses "TLS_CLIENT" or "TLS"`)
	}
	p, ok := protocols[protocol]
	if !ok {
		names := make([]string, 0, len(protocols))
		for n := range protocols {
			names = append(names, fmt.Sprintf("%q", n))
		}
		sort.Strings(names)
		return fmt.Errorf("mailer: unknown encryption protocol %q; valid: %s", protocol, strings.Join(names, ", "))
	}
	suites, err := parseCiphers(ciphers, unsafe)
	if err != nil {
		return err
	}
	c.security, c.minTLS, c.maxTLS, c.cipherSuites = p.security, p.minTLS, p.maxTLS, suites
	return nil
}

// newTLSConfig builds the client TLS configuration for the server.
func (c *config) newTLSConfig() *tls.Config {
	var t *tls.Config
	if c.tlsConfig != nil {
		t = c.tlsConfig.Clone()
	} else {
		t = &tls.Config{}
	}
	if t.ServerName == "" {
		t.ServerName = c.host
	}
	if c.minTLS != 0 {
		t.MinVersion = c.minTLS
	}
	if c.maxTLS != 0 {
		t.MaxVersion = c.maxTLS
	}
	if c.cipherSuites != nil {
		t.CipherSuites = c.cipherSuites
	}
	if c.skipVerify {
		t.InsecureSkipVerify = true
	}
	return t
}

package mailer

import (
	"crypto/tls"
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

// openSSLNames maps OpenSSL cipher names to the IANA names crypto/tls uses.
// crypto/tls knows only IANA names, so this table is written by hand; it
// covers every suite crypto/tls implements. TLS 1.3 suites have one name.
var openSSLNames = map[string]string{
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA256":                 "TLS_RSA_WITH_AES_128_CBC_SHA256",
	"RC4-SHA":                       "TLS_RSA_WITH_RC4_128_SHA",
	"DES-CBC3-SHA":                  "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-RC4-SHA":           "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
	"ECDHE-RSA-RC4-SHA":             "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
	"ECDHE-RSA-DES-CBC3-SHA":        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
	"ECDHE-ECDSA-AES128-SHA256":     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-AES128-SHA256":       "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
}

func (c *config) setEncryption(protocol, ciphers string, unsafe bool) error {
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

// parseCiphers turns a ':'-separated list of OpenSSL or IANA names into
// crypto/tls IDs. TLS 1.3 suites are accepted and left out of the result,
// since crypto/tls does not let them be chosen.
func parseCiphers(list string, unsafe bool) ([]uint16, error) {
	if list == "" {
		return nil, nil
	}
	byName := map[string]*tls.CipherSuite{}
	for _, s := range tls.CipherSuites() {
		byName[s.Name] = s
	}
	insecure := map[string]*tls.CipherSuite{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.Name] = s
	}
	var ids []uint16
	for _, name := range strings.Split(list, ":") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		iana := name
		if n, ok := openSSLNames[name]; ok {
			iana = n
		}
		s, ok := byName[iana]
		if !ok {
			s, ok = insecure[iana]
			if ok && !unsafe {
				return nil, fmt.Errorf("mailer: cipher suite %s is insecure; use WithUnsafeEncryption to allow it", name)
			}
		}
		if !ok {
			return nil, fmt.Errorf("mailer: unknown cipher suite %q; valid: %s", name, validCipherNames())
		}
		if isTLS13Only(s) {
			continue
		}
		ids = append(ids, s.ID)
	}
	return ids, nil
}

func isTLS13Only(s *tls.CipherSuite) bool {
	return len(s.SupportedVersions) == 1 && s.SupportedVersions[0] == tls.VersionTLS13
}

func validCipherNames() string {
	var names []string
	for o := range openSSLNames {
		names = append(names, o)
	}
	for _, s := range tls.CipherSuites() {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// tlsConfig builds the client TLS configuration for the server.
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

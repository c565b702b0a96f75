package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
)

func TestNewConnectionValidates(t *testing.T) {
	cases := []struct {
		name   string
		server string
		opts   []Option
		want   string
	}{
		{"empty server", "", nil, "empty server"},
		{"bad port in server", "mx.example.com:99999", nil, "invalid port"},
		{"port out of range", "mx.example.com", []Option{WithPort(0)}, "out of range"},
		{"conflicting ports", "mx.example.com:25", []Option{WithPort(587)}, "WithPort says 587"},
		{"bad security", "mx.example.com", []Option{WithSecurity(Security(42))}, "unknown security"},
		{"zero timeout", "mx.example.com", []Option{WithTimeout(0)}, "must be positive"},
		{"bad local name", "mx.example.com", []Option{WithLocalName("a\r\nMAIL FROM:<x>")}, "invalid local name"},
		{"bad source", "mx.example.com", []Option{WithSourceAddress("not-an-ip")}, "invalid source address"},
		{"tls versions", "mx.example.com", []Option{WithTLSVersions(tls.VersionTLS13, tls.VersionTLS12)}, "above the maximum"},
		{"unknown tls version", "mx.example.com", []Option{WithTLSVersions(0x0300, 0)}, "unknown TLS version"},
		{"max conns", "mx.example.com", []Option{WithMaxConnections(0)}, "at least 1"},
		{"injection in user", "mx.example.com", []Option{WithCredentials("u\r\nQUIT", "p")}, "CR, LF"},
		{"server with path", "mx.example.com/x", nil, "invalid server"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewConnection(tc.server, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewConnection error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestDefaultPorts(t *testing.T) {
	cases := []struct {
		server string
		opts   []Option
		port   int
		mode   Security
	}{
		{"mx.example.com", nil, 587, SecuritySTARTTLS},
		{"mx.example.com:465", nil, 465, SecurityTLS},
		{"mx.example.com", []Option{WithPort(465)}, 465, SecurityTLS},
		{"mx.example.com", []Option{WithSecurity(SecurityTLS)}, 465, SecurityTLS},
		{"mx.example.com", []Option{WithSecurity(SecurityNone)}, 25, SecurityNone},
		{"[::1]:2525", nil, 2525, SecuritySTARTTLS},
		{"mx.example.com", []Option{WithEncryption("SSLv23", "")}, 465, SecurityTLS},
		{"mx.example.com:25", []Option{WithEncryption("TLS", "")}, 25, SecuritySTARTTLS},
	}
	for _, tc := range cases {
		c, err := NewConnection(tc.server, tc.opts...)
		if err != nil {
			t.Fatalf("%s: %v", tc.server, err)
		}
		if c.cfg.port != tc.port || c.cfg.security.resolve(c.cfg.port) != tc.mode {
			t.Errorf("%s %d opts: port %d mode %v, want %d %v", tc.server, len(tc.opts), c.cfg.port,
				c.cfg.security.resolve(c.cfg.port), tc.port, tc.mode)
		}
	}
}

func TestWithEncryptionProtocols(t *testing.T) {
	cases := map[string]struct {
		mode     Security
		min, max uint16
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
	for name, want := range cases {
		c, err := NewConnection("mx.example.com", WithEncryption(name, ""))
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		tc := c.cfg.newTLSConfig()
		if c.cfg.security != want.mode || tc.MinVersion != want.min || tc.MaxVersion != want.max {
			t.Errorf("%q: mode %v versions %x-%x, want %v %x-%x", name, c.cfg.security, tc.MinVersion, tc.MaxVersion, want.mode, want.min, want.max)
		}
	}
	_, err := NewConnection("mx.example.com", WithEncryption("SSLv3", ""))
	if err == nil || !strings.Contains(err.Error(), `"TLSv1_2"`) {
		t.Errorf("unknown protocol: %v, want an error listing the valid names", err)
	}
}

func TestWithEncryptionCiphers(t *testing.T) {
	c, err := NewConnection("mx.example.com", WithEncryption("TLSv1_2",
		"ECDHE-RSA-AES128-GCM-SHA256:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.cfg.newTLSConfig().CipherSuites
	want := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("suites = %x, want %x", got, want)
	}
	_, err = NewConnection("mx.example.com", WithEncryption("TLS", "ECDHE-RSA-AES128-GCM-SHA256:NOPE"))
	if err == nil || !strings.Contains(err.Error(), `"NOPE"`) || !strings.Contains(err.Error(), "ECDHE-RSA-AES256-GCM-SHA384") {
		t.Errorf("unknown suite: %v, want the name and the valid list", err)
	}
	_, err = NewConnection("mx.example.com", WithEncryption("TLS", "RC4-SHA"))
	if err == nil || !strings.Contains(err.Error(), "WithUnsafeEncryption") {
		t.Errorf("insecure suite: %v, want a pointer to WithUnsafeEncryption", err)
	}
	c, err = NewConnection("mx.example.com", WithUnsafeEncryption("TLS", "DES-CBC3-SHA"))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.cfg.newTLSConfig().CipherSuites; len(s) != 1 || s[0] != tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA {
		t.Errorf("unsafe suites = %x", s)
	}
	// Every OpenSSL name in the table names a suite crypto/tls knows.
	for o := range openSSLNames {
		if _, err := parseCiphers(o, true); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
}

func TestTLSConfigKeepsCallerSettings(t *testing.T) {
	base := &tls.Config{ServerName: "", MinVersion: tls.VersionTLS13}
	c, err := NewConnection("smtp.example.com", WithTLSConfig(base), WithInsecureSkipVerify())
	if err != nil {
		t.Fatal(err)
	}
	tc := c.cfg.newTLSConfig()
	if tc.ServerName != "smtp.example.com" || tc.MinVersion != tls.VersionTLS13 || !tc.InsecureSkipVerify {
		t.Errorf("tls config = %+v", tc)
	}
	if base.ServerName != "" || base.InsecureSkipVerify {
		t.Error("WithTLSConfig changed the caller's config")
	}
}

func TestSMTPErrorFormat(t *testing.T) {
	e := newReply("RCPT", 550, "5.1.1 no such user")
	if e.EnhancedCode != (EnhancedCode{5, 1, 1}) || e.Message != "no such user" || e.Temporary() {
		t.Fatalf("newReply = %+v", e)
	}
	if got := e.Error(); got != "mailer: RCPT: 550 5.1.1 no such user" {
		t.Errorf("Error() = %q", got)
	}
	if !newReply("MAIL", 451, "4.3.0 try later").Temporary() {
		t.Error("451 not temporary")
	}
	if e := newReply("greeting", 554, "no service"); e.EnhancedCode != (EnhancedCode{}) || e.Message != "no service" {
		t.Errorf("no enhanced code: %+v", e)
	}
	auth := newReply("AUTH PLAIN", 535, "5.7.8 Authentication credentials invalid")
	if !strings.Contains(auth.Error(), "app password") {
		t.Errorf("AUTH 535 without hint: %v", auth)
	}
	te := &timeoutError{what: "x", err: errors.New("i/o timeout")}
	if !errors.Is(te, context.DeadlineExceeded) {
		t.Error("timeoutError does not match context.DeadlineExceeded")
	}
}

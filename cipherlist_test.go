package mailer

import (
	"crypto/tls"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// cipherStrings are compared against the openssl binary: the keywords,
// "+" combinations, the operators, separators, explicit names, DEFAULT,
// @SECLEVEL and @STRENGTH.
var cipherStrings = []string{
	"ALL", "DEFAULT", "COMPLEMENTOFDEFAULT", "COMPLEMENTOFALL", "HIGH", "MEDIUM", "LOW",
	"aNULL", "eNULL", "NULL", "kRSA", "RSA", "aRSA", "aECDSA", "ECDSA", "ECDHE", "EECDH",
	"kECDHE", "AES", "AES128", "AES256", "AESGCM", "CHACHA20", "SHA1", "SHA", "SHA256",
	"SHA384", "3DES", "RC4", "CBC", "FIPS", "TLSv1.2", "TLSv1", "SSLv3", "CAMELLIA",
	"ECDHE+AESGCM", "EECDH+AESGCM:EDH+AESGCM", "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM",
	"kRSA+AES128", "aECDSA+SHA1", "ALL+RC4", "HIGH+FIPS", "kRSA+ECDHE", "TLSv1.2+CBC",
	"HIGH:!aNULL", "HIGH:!aNULL:!MD5", "ALL:!RSA", "ALL:!kRSA:!SHA1", "ALL:-AES128:AES128",
	"ALL:!AES128:AES128", "ALL:+SHA1", "ALL:+kRSA:+AES128", "AESGCM:-ECDSA:ECDSA",
	"DEFAULT:!kRSA", "DEFAULT:+AES256", "DEFAULT,-SHA1 SHA1",
	"ECDHE+AESGCM,ECDHE+CHACHA20 kRSA;AES256-SHA",
	"ECDHE-RSA-AES128-SHA:AES256-SHA:ECDHE-ECDSA-CHACHA20-POLY1305", "AES128-SHA:HIGH",
	"ECDHE-RSA-AES128-GCM-SHA256+AESGCM", "!AES128-SHA:kRSA", "+AES128-SHA:kRSA:+AES128-SHA",
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" +
		"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" +
		"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305",
	"ALL:@SECLEVEL=0", "ALL:@SECLEVEL=1", "ALL:@SECLEVEL=2", "ALL:@SECLEVEL=3",
	"ALL:@SECLEVEL=4", "ALL:@SECLEVEL=5", "@SECLEVEL=3:kRSA:ECDHE", "DEFAULT:@SECLEVEL=4",
	"ALL:@STRENGTH", "AES128:AES256:@STRENGTH", "kRSA:ECDHE+SHA1:@STRENGTH",
	"CHACHA20:AES128:@STRENGTH:AES256",
}

// openssl returns the names "openssl ciphers -v" lists for s, or nil when
// it finds no match. Without -s it ignores the security level, so strings
// with @SECLEVEL are listed with -s: what a client would offer.
func openssl(t *testing.T, s string) []string {
	t.Helper()
	args := []string{"ciphers", "-v", s}
	if strings.Contains(s, "@SECLEVEL") {
		args = []string{"ciphers", "-s", "-v", s}
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "no cipher match") {
			return nil
		}
		t.Fatalf("openssl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func TestCipherStringsMatchOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is needed to check the cipher strings:", err)
		}
		t.Skip("no openssl binary:", err)
	}
	// This openssl's own suites: builds differ (RC4 and 3DES need
	// enable-weak-ssl-ciphers), so suites it lacks are left out of the
	// comparison.
	local := map[uint16]bool{}
	for _, name := range openssl(t, "ALL:COMPLEMENTOFALL") {
		if iana, ok := openSSLNames[name]; ok {
			local[suiteID(t, iana)] = true
		} else if !slices.Contains(otherSuites, name) && !slices.Contains(tls13Suites, name) {
			t.Errorf("openssl knows %s, the parser does not", name)
		}
	}
	for _, s := range cipherStrings {
		var want []string
		for _, name := range openssl(t, s) {
			if iana, ok := openSSLNames[name]; ok {
				want = append(want, iana)
			}
		}
		ids, err := parseCiphers(s, true)
		if err != nil && !strings.Contains(err.Error(), "selects no") {
			t.Errorf("%q: %v", s, err)
			continue
		}
		var got []string
		for _, id := range ids {
			if local[id] {
				got = append(got, tls.CipherSuiteName(id))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q:\n got %v\nwant %v", s, got, want)
		}
		// Without WithUnsafeEncryption, the same minus the insecure suites.
		safe, err := parseCiphers(s, false)
		if want := slices.DeleteFunc(ids, insecureSuite); err == nil && !slices.Equal(safe, want) {
			t.Errorf("%q safe: got %x, want %x", s, safe, want)
		}
	}
}

func suiteID(t *testing.T, iana string) uint16 {
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if s.Name == iana {
			return s.ID
		}
	}
	t.Fatalf("crypto/tls does not know %s", iana)
	return 0
}

func insecureSuite(id uint16) bool {
	return slices.ContainsFunc(tls.InsecureCipherSuites(), func(s *tls.CipherSuite) bool { return s.ID == id })
}

func TestCipherStringErrors(t *testing.T) {
	for _, tc := range []struct {
		ciphers string
		unsafe  bool
		want    []string // in the error
	}{
		{"HIGH:BOGUS", false, []string{`"BOGUS"`, "docs/encryption.md", "ECDHE+AESGCM"}},
		{"ECDHE+", false, []string{`unknown cipher or keyword ""`}},
		{"ALL:@FOO", false, []string{`"@FOO"`, "@SECLEVEL=0 to 5"}},
		{"ALL:@SECLEVEL=6", false, []string{"@SECLEVEL=0 to 5"}},
		{"HIGH:DEFAULT", false, []string{"DEFAULT can only begin"}},
		{"RC4-SHA", true, nil},
		{"RC4-SHA", false, []string{"RC4-SHA is insecure", "WithUnsafeEncryption"}},
		{"AES128-SHA:ECDHE", false, []string{"AES128-SHA is insecure", "WithUnsafeEncryption"}},
		{"kRSA", false, []string{"only suites crypto/tls deems insecure", "WithUnsafeEncryption"}},
		{"RC4:3DES", false, []string{"only suites crypto/tls deems insecure"}},
		{"aNULL", true, []string{"selects no TLS 1.0-1.2 suite"}},
		{"CAMELLIA:ARIA", true, []string{"selects no"}},
		{"DHE-RSA-AES128-GCM-SHA256", true, []string{"selects no"}},
		{"ALL:!ALL", true, []string{"selects no"}},
		{"ALL:@SECLEVEL=3:kRSA", false, nil},
		{"kRSA:@SECLEVEL=3", true, []string{"selects no"}},
	} {
		_, err := parseCiphers(tc.ciphers, tc.unsafe)
		if (err == nil) != (tc.want == nil) {
			t.Errorf("%q (unsafe %v): error %v, want one containing %q", tc.ciphers, tc.unsafe, err, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v, want %q in it", tc.ciphers, err, w)
			}
		}
	}
}

func TestEncryptionCipherStrings(t *testing.T) {
	// mumailer's documented example, and the usual strings, need no
	// WithUnsafeEncryption: the insecure suites they select are left out.
	for _, s := range []string{"ALL:@SECLEVEL=1", "HIGH:!aNULL", "DEFAULT", "ALL"} {
		c, err := NewConnection("mx.example.com", WithEncryption("TLSv1_1", s))
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		got := c.cfg.newTLSConfig().CipherSuites
		if len(got) == 0 || slices.ContainsFunc(got, insecureSuite) {
			t.Errorf("%q: suites %x", s, got)
		}
	}
	c, err := NewConnection("mx.example.com", WithUnsafeEncryption("TLS", "ALL"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.cfg.newTLSConfig().CipherSuites
	for _, id := range []uint16{tls.TLS_RSA_WITH_RC4_128_SHA, tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA256} {
		if !slices.Contains(got, id) {
			t.Errorf("unsafe ALL lacks %s: %x", tls.CipherSuiteName(id), got)
		}
	}
	// TLS 1.3 suites cannot be chosen: alone they keep crypto/tls's defaults.
	c, err = NewConnection("mx.example.com", WithEncryption("TLSv1_3", "TLS_AES_256_GCM_SHA384:TLS_AES_128_CCM_SHA256"))
	if err != nil || c.cfg.cipherSuites != nil {
		t.Errorf("TLS 1.3 names: %v, %x", err, c.cfg.cipherSuites)
	}
	// IANA names are accepted too.
	ids, err := parseCiphers("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 TLS_AES_128_GCM_SHA256", false)
	if err != nil || !slices.Equal(ids, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}) {
		t.Errorf("IANA names: %x, %v", ids, err)
	}
}

func TestEncryptionProtocolErrors(t *testing.T) {
	_, err := NewConnection("mx.example.com", WithEncryption("TLS_SERVER", ""))
	if err == nil || !strings.Contains(err.Error(), "for servers") || !strings.Contains(err.Error(), `"TLS_CLIENT"`) {
		t.Errorf("TLS_SERVER: %v", err)
	}
	_, err = NewConnection("mx.example.com", WithEncryption("SSLv3", ""))
	if err == nil || !strings.Contains(err.Error(), `"SSLv23", "TLS", "TLS_CLIENT", "TLSv1"`) {
		t.Errorf("unknown protocol: %v", err)
	}
}

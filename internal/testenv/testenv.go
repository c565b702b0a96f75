// Package testenv finds the real servers that scripts/test-servers starts
// for the integration tests, from the MAILER_TEST_* variables.
package testenv

import (
	"bytes"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// PostfixEnv describes the Postfix instance.
type PostfixEnv struct {
	Plain      string // host:port, no TLS, no auth
	Submission string // STARTTLS required, SASL
	SMTPS      string // implicit TLS, SASL
	Small      string // no TLS, message_size_limit 100000
	NoChunk    string // no TLS, CHUNKING not announced (PIPELINING is)
	CAPool     *x509.CertPool
	User       string // Cyrus SASL user
	Password   string
	Maildir    string // the catch-all Maildir for example.test
	Log        string // Postfix's log file
}

// ProxyEnv describes the proxy servers; every one relays to Postfix's
// ports.
type ProxyEnv struct {
	SOCKS5, SOCKS5User, SOCKS5Pass             string // dante, username/password
	SOCKS4                                     string // dante, no auth
	SOCKS4A                                    string // Perl IO::Socket::Socks
	Microsocks, MicrosocksUser, MicrosocksPass string
	HTTP, HTTPUser, HTTPPass                   string // tinyproxy, Basic auth
	HTTPNoAuth                                 string // tinyproxy, no auth
}

// missing skips the test, or fails it under CI=true, when a server's
// variables are absent.
func missing(t testing.TB, what string) {
	t.Helper()
	msg := what + " is not running: run ./scripts/test (or source the env file of scripts/test-servers start) to test against it"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func lookup(t testing.TB, what string, names ...string) []string {
	t.Helper()
	vals := make([]string, len(names))
	for i, n := range names {
		vals[i] = os.Getenv(n)
		if vals[i] == "" {
			missing(t, what+" ("+n+" unset)")
		}
	}
	return vals
}

// Postgres returns the URL of the test PostgreSQL cluster that
// scripts/test-servers starts (MAILER_TEST_POSTGRES_URL), or skips (fails
// under CI=true) the test when it is absent.
func Postgres(t testing.TB) string {
	t.Helper()
	return lookup(t, "PostgreSQL", "MAILER_TEST_POSTGRES_URL")[0]
}

// Postfix returns the Postfix environment, or skips (fails under CI=true)
// the test when it is absent.
func Postfix(t testing.TB) *PostfixEnv {
	t.Helper()
	v := lookup(t, "Postfix", "MAILER_TEST_POSTFIX_PLAIN", "MAILER_TEST_POSTFIX_SUBMISSION",
		"MAILER_TEST_POSTFIX_SMTPS", "MAILER_TEST_POSTFIX_SMALL", "MAILER_TEST_POSTFIX_CA",
		"MAILER_TEST_SASL_USER", "MAILER_TEST_SASL_PASS", "MAILER_TEST_POSTFIX_MAILDIR", "MAILER_TEST_POSTFIX_NOCHUNK")
	pem, err := os.ReadFile(v[4])
	if err != nil {
		t.Fatalf("testenv: reading the CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("testenv: no certificate in %s", v[4])
	}
	return &PostfixEnv{Plain: v[0], Submission: v[1], SMTPS: v[2], Small: v[3], CAPool: pool,
		User: v[5], Password: v[6], Maildir: v[7], NoChunk: v[8], Log: os.Getenv("MAILER_TEST_POSTFIX_LOG")}
}

// Proxies returns the proxy environment, or skips (fails under CI=true)
// the test when it is absent.
func Proxies(t testing.TB) *ProxyEnv {
	t.Helper()
	v := lookup(t, "the proxy servers", "MAILER_TEST_SOCKS5", "MAILER_TEST_SOCKS5_USER", "MAILER_TEST_SOCKS5_PASS",
		"MAILER_TEST_SOCKS4", "MAILER_TEST_SOCKS4A", "MAILER_TEST_MICROSOCKS", "MAILER_TEST_MICROSOCKS_USER",
		"MAILER_TEST_MICROSOCKS_PASS", "MAILER_TEST_HTTP_PROXY", "MAILER_TEST_HTTP_PROXY_USER",
		"MAILER_TEST_HTTP_PROXY_PASS", "MAILER_TEST_HTTP_PROXY_NOAUTH")
	return &ProxyEnv{SOCKS5: v[0], SOCKS5User: v[1], SOCKS5Pass: v[2], SOCKS4: v[3], SOCKS4A: v[4],
		Microsocks: v[5], MicrosocksUser: v[6], MicrosocksPass: v[7], HTTP: v[8], HTTPUser: v[9],
		HTTPPass: v[10], HTTPNoAuth: v[11]}
}

// SMTPSink starts Postfix's smtp-sink (a null SMTP server that announces
// PIPELINING unless pipelining is false, and never CHUNKING) on a free
// loopback port for the rest of the test and returns its address. It
// skips (fails under CI=true) the test when smtp-sink is not installed.
func SMTPSink(t testing.TB, pipelining bool) string {
	t.Helper()
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		bin = "/usr/sbin/smtp-sink"
	}
	if _, err := os.Stat(bin); err != nil {
		missing(t, "smtp-sink (Debian package postfix)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{"-u", "nobody", addr, "64"}
	if !pipelining {
		args = append([]string{"-p"}, args...)
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: smtp-sink did not listen on %s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Has reports whether a delivered message contains needle now.
func (e *PostfixEnv) Has(needle string) bool {
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(e.Maildir, sub, "*"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(needle)) {
				return true
			}
		}
	}
	return false
}

// WaitMessage polls the Maildir until a delivered file contains needle and
// returns that file; it fails the test after timeout, showing Postfix's log.
func (e *PostfixEnv) WaitMessage(t testing.TB, needle string, timeout time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, sub := range []string{"new", "cur"} {
			files, _ := filepath.Glob(filepath.Join(e.Maildir, sub, "*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err == nil && bytes.Contains(b, []byte(needle)) {
					return b
				}
			}
		}
		if time.Now().After(deadline) {
			logTail, _ := os.ReadFile(e.Log)
			if len(logTail) > 4000 {
				logTail = logTail[len(logTail)-4000:]
			}
			t.Fatalf("testenv: no delivered message contains %q after %v; Postfix log:\n%s", needle, timeout, logTail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

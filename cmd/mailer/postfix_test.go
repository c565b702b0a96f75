package main

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/internal/testenv"
)

// postfixCA returns the CA file of the Postfix that scripts/test-servers
// started.
func postfixCA(t *testing.T) string {
	t.Helper()
	testenv.Postfix(t)
	return os.Getenv("MAILER_TEST_POSTFIX_CA")
}

// TestPostfixSend sends through Postfix's submission port: STARTTLS, a
// SASL login with the password from a file, a message profile.
func TestPostfixSend(t *testing.T) {
	pf := testenv.Postfix(t)
	ca := postfixCA(t)
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte(pf.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	subject := "cli send " + secret(t)
	r := mailerRun(t, "send", "--server", pf.Submission, "--security", "starttls", "--tls-ca", ca,
		"--username", pf.User, "--password-file", pw, "--profile-message", "testdata/profile-message.yaml",
		"--to", "Foo foo@example.test", "--cc", "cc@example.test", "--bcc", "bcc@example.test",
		"--subject", subject, "-v")
	r.wantCode(t, 0)
	if !strings.HasPrefix(r.stdout, "sent <") {
		t.Errorf("-v printed %q", r.stdout)
	}
	got := string(pf.WaitMessage(t, subject, 20*time.Second))
	for _, want := range []string{"<h1>Hello world!</h1>", "To: Foo <foo@example.test>", "X-Mailer: MuMailer", "hello.txt"} {
		if !strings.Contains(got, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, got)
		}
	}
	// The catch-all Maildir holds each recipient's copy, with
	// Delivered-To naming it; the header must not name the Bcc recipient.
	if strings.Contains(got, "\nBcc:") {
		t.Error("a Bcc header reached the message")
	}
}

// TestPostfixGitSendEmail runs git send-email with mailer sendmail as its
// sendmail command, against Postfix's submission port.
func TestPostfixGitSendEmail(t *testing.T) {
	pf := testenv.Postfix(t)
	ca := postfixCA(t)
	if !gitSendEmailInstalled() {
		skipOrFail(t, "git send-email (Debian package git-email) is not installed: run scripts/install-test-deps")
	}
	home := t.TempDir()
	repo := filepath.Join(home, "repo")
	env := append(os.Environ(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Patch Author", "GIT_AUTHOR_EMAIL=author@example.test",
		"GIT_COMMITTER_NAME=Patch Author", "GIT_COMMITTER_EMAIL=author@example.test",
		"SMTP_PASS="+pf.Password)
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = repo, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	git("init", "-q")
	token := secret(t)
	if err := os.WriteFile(filepath.Join(repo, "README"), []byte("patch "+token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "README")
	git("commit", "-q", "-m", "Add README "+token)
	patch := strings.TrimSpace(git("format-patch", "-1", "-o", home))

	// As the issue has it: mailer sendmail --profile-smtp X.
	host, port, _ := net.SplitHostPort(pf.Submission)
	profile := filepath.Join(home, "smtp.yaml")
	yaml := "SMTP:\n  SERVER: " + host + "\n  PORT: " + port + "\n  USERNAME: " + pf.User +
		"\n  PASSWORD_ENV: SMTP_PASS\n  ENCRYPTION: TLS\n  TLS_CA: " + ca + "\n"
	if err := os.WriteFile(profile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	sendmail := binary + " sendmail --profile-smtp " + profile
	out := git("send-email", "--sendmail-cmd="+sendmail, "--confirm=never", "--no-validate", "--quiet",
		"--from=Patch Author <author@example.test>", "--to=list@example.test", "--bcc=hidden@example.test", patch)
	got := string(pf.WaitMessage(t, "Add README "+token, 20*time.Second))
	if !strings.Contains(got, "patch "+token) || !strings.Contains(got, "To: list@example.test") {
		t.Errorf("delivered patch is not the one sent (git said %s):\n%s", out, got)
	}
	if strings.Contains(got, "\nBcc:") {
		t.Error("a Bcc header reached the message")
	}
}

// gitSendEmailInstalled reports whether git's exec path has send-email.
func gitSendEmailInstalled() bool {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(strings.TrimSpace(string(out)), "git-send-email"))
	return err == nil
}

// skipOrFail skips the test, or fails it under CI=true, as testenv does.
func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestPostfixSendmailExitCodes checks sysexits.h codes from real replies.
func TestPostfixSendmailExitCodes(t *testing.T) {
	pf := testenv.Postfix(t)
	msg := "From: s@example.test\nSubject: codes\n\nbody\n"
	for rcpt, code := range map[string]int{"tempfail@example.test": exTempFail, "reject@example.test": exNoUser} {
		r := invocation{args: []string{"sendmail", "--server", pf.Plain, "--security", "none", "-i", rcpt}, stdin: msg}.run(t)
		r.wantCode(t, code)
	}
}

// TestPostfixCheckThroughProxy checks Postfix's implicit-TLS port through
// microsocks's SOCKS5 (whose user is its own, where dante's is a system
// account) and tinyproxy's HTTP CONNECT.
func TestPostfixCheckThroughProxy(t *testing.T) {
	pf := testenv.Postfix(t)
	px := testenv.Proxies(t)
	ca := postfixCA(t)
	for name, proxy := range map[string]string{
		"socks5": (&url.URL{Scheme: "socks5h", User: url.UserPassword(px.MicrosocksUser, px.MicrosocksPass), Host: px.Microsocks}).String(),
		"http":   (&url.URL{Scheme: "http", User: url.UserPassword(px.HTTPUser, px.HTTPPass), Host: px.HTTP}).String(),
	} {
		t.Run(name, func(t *testing.T) {
			r := invocation{args: []string{"check", "--server", pf.SMTPS, "--security", "tls", "--tls-ca", ca,
				"--proxy", proxy, "--username", pf.User, "--json"},
				env: []string{passwordEnv + "=" + pf.Password}}.run(t)
			r.wantCode(t, 0)
			var rep checkReport
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("%v\n%s", err, r.stdout)
			}
			if !strings.Contains(rep.Greeting, "Postfix") || rep.TLS == nil || rep.Login == nil || !rep.Login.OK {
				t.Errorf("report %+v", rep)
			}
		})
	}
}

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gomailer/mailer/mailertest"
)

func TestSendFlags(t *testing.T) {
	srv := plainServer(t)
	noExt := filepath.Join(t.TempDir(), "NOTES")
	if err := os.WriteFile(noExt, []byte("plain words, no extension\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// mumailer's forms: several values after one flag, "Name address",
	// --reply_to with its underscore.
	r := mailerRun(t, "send", "--server", srv.Host(), "--port", strconv.Itoa(srv.Port()), "--security", "none",
		"--sender", "Muflone muflone@example.com",
		"--to", "Foo Bar foo@example.com", "baz@example.com",
		"--cc", "Cee cc@example.com", "--bcc", "hidden@example.com",
		"--reply_to", "Replies replies@example.com",
		"--subject", "Test e-mail", "--body", "Hello world!",
		"--header", "X-Mailer=mailer test", "X-Spam=0",
		"--attachment", noExt,
		"--date", "2024-03-01 10:20:30")
	r.wantCode(t, 0)
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	m := waitOne(t, srv)
	if m.From != "muflone@example.com" {
		t.Errorf("MAIL FROM %q", m.From)
	}
	want := []string{"foo@example.com", "baz@example.com", "cc@example.com", "hidden@example.com"}
	if !slices.Equal(m.To, want) {
		t.Errorf("RCPT TO %v, want %v", m.To, want)
	}
	for name, want := range map[string]string{
		"From":     "Muflone <muflone@example.com>",
		"To":       "Foo Bar <foo@example.com>, baz@example.com",
		"Cc":       "Cee <cc@example.com>",
		"Reply-To": "Replies <replies@example.com>",
		"Subject":  "Test e-mail",
		"X-Mailer": "mailer test",
		"X-Spam":   "0",
	} {
		if got := header(m.Data, name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if got := header(m.Data, "Bcc"); got != "" {
		t.Errorf("Bcc header sent: %q", got)
	}
	if got := header(m.Data, "Date"); !strings.Contains(got, "01 Mar 2024 10:20:30") {
		t.Errorf("Date %q, want 01 Mar 2024 10:20:30", got)
	}
	data := string(m.Data)
	if !strings.Contains(data, "Hello world!") {
		t.Error("body missing")
	}
	if !strings.Contains(data, `text/plain; charset=utf-8`) || !strings.Contains(data, `NOTES`) {
		t.Errorf("the attachment without extension was not detected as text/plain:\n%s", data)
	}
}

func TestSendContentTypes(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.bin"), filepath.Join(dir, "b.dat")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := plainServer(t)
	base := []string{"send", "--server", srv.Addr(), "--security", "none", "--sender", "s@example.com",
		"--to", "r@example.com", "--subject", "types", "--body", "see attached", "--attachment", a, b}

	// One type for every attachment: mumailer fails on this one.
	mailerRun(t, append(base, "--content-type", "application/x-one")...).wantCode(t, 0)
	if got := strings.Count(string(waitOne(t, srv).Data), "Content-Type: application/x-one"); got != 2 {
		t.Errorf("%d attachments of type application/x-one, want 2", got)
	}

	srv2 := plainServer(t)
	base[2] = srv2.Addr()
	mailerRun(t, append(base, "--content-type", "application/x-a", "application/x-b")...).wantCode(t, 0)
	data := string(waitOne(t, srv2).Data)
	if !strings.Contains(data, "application/x-a") || !strings.Contains(data, "application/x-b") {
		t.Errorf("one type per attachment not applied:\n%s", data)
	}

	r := mailerRun(t, append(base, "--content-type", "a/a", "b/b", "c/c")...)
	r.wantCode(t, exUsage)
	if !strings.Contains(r.stderr, "3 content types for 2 attachments") {
		t.Errorf("stderr: %s", r.stderr)
	}
}

// TestSendMumailerProfiles sends with profiles written from mumailer's
// documented keys, unchanged; only the server's address comes from the
// command line (which wins), and the password from the environment.
func TestSendMumailerProfiles(t *testing.T) {
	pass := secret(t)
	srv := plainServer(t, mailertest.WithImplicitTLS(), mailertest.WithUser("muflone@example.com", pass))
	ca := caFile(t, srv, true)
	r := invocation{args: []string{"send", "--profile-smtp", "testdata/profile-smtp.yaml",
		"--profile-message", "testdata/profile-message.yaml",
		"--server", srv.Host(), "--port", strconv.Itoa(srv.Port()), "--tls-ca", ca},
		env: []string{passwordEnv + "=" + pass}}.run(t)
	r.wantCode(t, 0)
	m := waitOne(t, srv)
	if !m.TLS || m.AuthUser != "muflone@example.com" {
		t.Errorf("TLS %v, user %q: want implicit TLS and muflone@example.com", m.TLS, m.AuthUser)
	}
	if want := []string{"foo@example.com", "bar@example.com", "secret@example.com"}; !slices.Equal(m.To, want) {
		t.Errorf("RCPT TO %v, want %v", m.To, want)
	}
	data := string(m.Data)
	for _, want := range []string{"Subject: Test e-mail", "text/html", "<h1>Hello world!</h1>",
		"X-Mailer: MuMailer", "X-Mumailer-Profile: message.yaml", "Date: Sun, 01 Jan 2023 10:00:00",
		"hello.txt", "pixel.bin", "Content-Type: text/plain", "Content-Type: application/octet-stream"} {
		if !strings.Contains(data, want) {
			t.Errorf("message lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(data, "secret@example.com") {
		t.Error("the Bcc address is in the message")
	}

	// The command line wins over the profile.
	srv2 := plainServer(t, mailertest.WithImplicitTLS(), mailertest.WithUser("muflone@example.com", pass))
	r = invocation{args: []string{"send", "--profile-smtp", "testdata/profile-smtp.yaml",
		"--profile-message", "testdata/profile-message.yaml",
		"--server", srv2.Host(), "--port", strconv.Itoa(srv2.Port()), "--tls-ca", caFile(t, srv2, true),
		"--subject", "From the command line", "--to", "only@example.com", "--bcc", "other@example.com"},
		env: []string{passwordEnv + "=" + pass}}.run(t)
	r.wantCode(t, 0)
	m = waitOne(t, srv2)
	if want := []string{"only@example.com", "bar@example.com", "other@example.com"}; !slices.Equal(m.To, want) {
		t.Errorf("RCPT TO %v, want %v", m.To, want)
	}
	if got := header(m.Data, "Subject"); got != "From the command line" {
		t.Errorf("Subject %q", got)
	}
}

// TestSendTimeoutHonoured checks that the profile's TIMEOUT bounds the
// wait for a server that never greets (mumailer ignored it).
func TestSendTimeoutHonoured(t *testing.T) {
	srv := plainServer(t, mailertest.WithFault(mailertest.Fault{Command: "GREETING", Action: mailertest.Stall}))
	profile := filepath.Join(t.TempDir(), "smtp.yaml")
	yaml := "SMTP:\n  SERVER: " + srv.Host() + "\n  PORT: " + strconv.Itoa(srv.Port()) + "\n  TIMEOUT: 1\n  ENCRYPTION: ''\n"
	if err := os.WriteFile(profile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mailerRun(t, "send", "--profile-smtp", profile, "--sender", "s@example.com", "--to", "r@example.com", "--subject", "x")
	r.wantCode(t, exTempFail)
	if !strings.Contains(r.stderr, "within 1s") {
		t.Errorf("stderr does not show the 1 s timeout: %s", r.stderr)
	}
}

func TestSendErrors(t *testing.T) {
	pass := secret(t)
	msg := []string{"--sender", "s@example.com", "--subject", "x", "--body", "y"}
	t.Run("unknown recipient", func(t *testing.T) {
		srv := plainServer(t, mailertest.WithRecipientReply("nobody@example.com", 550, "5.1.1", "no such user"))
		r := mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--security", "none", "--to", "nobody@example.com"}, msg...)...)
		r.wantCode(t, exNoUser)
		if !strings.Contains(r.stderr, "550 5.1.1 no such user") {
			t.Errorf("stderr lacks the reply: %s", r.stderr)
		}
	})
	t.Run("temporary refusal", func(t *testing.T) {
		srv := plainServer(t, mailertest.WithRecipientReply("later@example.com", 451, "4.3.0", "try later"))
		r := mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--security", "none", "--to", "later@example.com"}, msg...)...)
		r.wantCode(t, exTempFail)
	})
	t.Run("wrong password", func(t *testing.T) {
		srv := plainServer(t, mailertest.WithSTARTTLS(), mailertest.WithUser("u", pass))
		r := mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--tls-ca", caFile(t, srv, false),
			"--username", "u", "--password", "wrong", "--to", "r@example.com"}, msg...)...)
		r.wantCode(t, exNoPerm)
		if !strings.Contains(r.stderr, "535") || !strings.Contains(r.stderr, "check --username and the password") {
			t.Errorf("stderr: %s", r.stderr)
		}
	})
	t.Run("unknown CA", func(t *testing.T) {
		srv := plainServer(t, mailertest.WithSTARTTLS())
		r := mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--to", "r@example.com"}, msg...)...)
		r.wantCode(t, exUnavailable)
		if !strings.Contains(r.stderr, "--tls-ca") {
			t.Errorf("stderr does not suggest --tls-ca: %s", r.stderr)
		}
	})
	t.Run("no STARTTLS", func(t *testing.T) {
		srv := plainServer(t)
		r := mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--to", "r@example.com"}, msg...)...)
		r.wantCode(t, exUnavailable)
		if !strings.Contains(r.stderr, "does not offer STARTTLS") {
			t.Errorf("stderr: %s", r.stderr)
		}
	})
	t.Run("implicit TLS port", func(t *testing.T) {
		// The server waits for a TLS hello, the client for a greeting.
		srv := plainServer(t, mailertest.WithImplicitTLS())
		r := mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--greeting-timeout", "0.5", "--to", "r@example.com"}, msg...)...)
		r.wantCode(t, exTempFail)
		if !strings.Contains(r.stderr, "try --security tls") {
			t.Errorf("stderr does not suggest --security tls: %s", r.stderr)
		}
	})
	t.Run("STARTTLS port", func(t *testing.T) {
		srv := plainServer(t, mailertest.WithSTARTTLS())
		r := mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--security", "tls", "--to", "r@example.com"}, msg...)...)
		r.wantCode(t, exUnavailable)
		if !strings.Contains(r.stderr, "use --security starttls") {
			t.Errorf("stderr does not suggest --security starttls: %s", r.stderr)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		srv := plainServer(t)
		addr := srv.Addr()
		srv.Close()
		r := mailerRun(t, append([]string{"send", "--server", addr, "--security", "none", "--to", "r@example.com"}, msg...)...)
		r.wantCode(t, exTempFail)
		if !strings.Contains(r.stderr, "check --server and --port") {
			t.Errorf("stderr: %s", r.stderr)
		}
	})
	t.Run("bad address", func(t *testing.T) {
		r := mailerRun(t, append([]string{"send", "--server", "127.0.0.1:1", "--to", "not an address"}, msg...)...)
		r.wantCode(t, exDataErr)
	})
	t.Run("unknown flag", func(t *testing.T) {
		r := mailerRun(t, "send", "--no-such-flag")
		r.wantCode(t, exUsage)
	})
	t.Run("unknown profile key", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "p.yaml")
		if err := os.WriteFile(p, []byte("SMTP:\n  SERVR: x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := mailerRun(t, append([]string{"send", "--profile-smtp", p, "--to", "r@example.com"}, msg...)...)
		r.wantCode(t, exConfig)
		if !strings.Contains(r.stderr, "SERVR") {
			t.Errorf("stderr: %s", r.stderr)
		}
	})
}

func TestSendSecrets(t *testing.T) {
	pass := secret(t)
	srv := plainServer(t, mailertest.WithSTARTTLS(), mailertest.WithUser("u", pass))
	ca := caFile(t, srv, false)
	base := []string{"send", "--server", srv.Addr(), "--tls-ca", ca, "--username", "u",
		"--sender", "s@example.com", "--to", "r@example.com", "--subject", "x", "--body", "y"}
	dir := t.TempDir()

	t.Run("command", func(t *testing.T) {
		r := mailerRun(t, append(base, "--password-command", "printf '%s\\n' "+pass, "--debug")...)
		r.wantCode(t, 0)
		if strings.Contains(r.stderr, pass) {
			t.Error("the debug transcript shows the password")
		}
		if !strings.Contains(r.stderr, "C: AUTH") {
			t.Errorf("no transcript on stderr with --debug: %s", r.stderr)
		}
	})
	t.Run("environment", func(t *testing.T) {
		invocation{args: append(base, "--password-env", "SMTP_PASS"), env: []string{"SMTP_PASS=" + pass}}.run(t).wantCode(t, 0)
		invocation{args: base, env: []string{passwordEnv + "=" + pass}}.run(t).wantCode(t, 0)
	})
	t.Run("file", func(t *testing.T) {
		f := filepath.Join(dir, "pw")
		if err := os.WriteFile(f, []byte(pass+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		mailerRun(t, append(base, "--password-file", f)...).wantCode(t, 0)
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
		r := mailerRun(t, append(base, "--password-file", f)...)
		r.wantCode(t, exConfig)
		if !strings.Contains(r.stderr, "chmod 600") {
			t.Errorf("stderr: %s", r.stderr)
		}
	})
	t.Run("environment without a user", func(t *testing.T) {
		// MAILER_PASSWORD set for another server must not break a send
		// that needs no login.
		plain := plainServer(t)
		invocation{args: []string{"send", "--server", plain.Addr(), "--security", "none", "--sender", "s@example.com",
			"--to", "r@example.com", "--subject", "x"}, env: []string{passwordEnv + "=unused"}}.run(t).wantCode(t, 0)
		r := mailerRun(t, "send", "--server", plain.Addr(), "--security", "none", "--password", "p",
			"--sender", "s@example.com", "--to", "r@example.com")
		r.wantCode(t, exUsage)
	})
	t.Run("missing", func(t *testing.T) {
		r := mailerRun(t, base...)
		r.wantCode(t, exConfig)
		if !strings.Contains(r.stderr, "no password for u") {
			t.Errorf("stderr: %s", r.stderr)
		}
	})
	ctx := t.Context()
	msgs, err := srv.WaitMessages(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.AuthUser != "u" || !m.TLS {
			t.Errorf("message from %q, TLS %v", m.AuthUser, m.TLS)
		}
	}
}

// TestSendCiphersKeepTLS checks that --ciphers without --encryption keeps
// the default security mode (mumailer's empty protocol name means none).
func TestSendCiphersKeepTLS(t *testing.T) {
	srv := plainServer(t, mailertest.WithSTARTTLS())
	r := mailerRun(t, "send", "--server", srv.Addr(), "--tls-ca", caFile(t, srv, false), "--ciphers", "HIGH:!aNULL",
		"--sender", "s@example.com", "--to", "r@example.com", "--subject", "x")
	r.wantCode(t, 0)
	if m := waitOne(t, srv); !m.TLS {
		t.Error("the message went in clear text")
	}
}

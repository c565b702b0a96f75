package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

func TestCheckJSON(t *testing.T) {
	pass := secret(t)
	srv := plainServer(t, mailertest.WithSTARTTLS(), mailertest.WithUser("u", pass))
	ca := caFile(t, srv, false)
	r := invocation{args: []string{"check", "--server", srv.Addr(), "--tls-ca", ca, "--username", "u", "--json"},
		env: []string{passwordEnv + "=" + pass}}.run(t)
	r.wantCode(t, 0)
	var rep checkReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if !strings.HasPrefix(rep.Greeting, "220 ") {
		t.Errorf("greeting %q", rep.Greeting)
	}
	if rep.Security != "STARTTLS" || rep.TLS == nil || !strings.HasPrefix(rep.TLS.Version, "TLS 1.") || rep.TLS.CipherSuite == "" {
		t.Errorf("security %q, TLS %+v", rep.Security, rep.TLS)
	}
	if rep.TLS != nil {
		if n := len(rep.TLS.Certificates); n != 2 {
			t.Errorf("%d certificates, want the server's and its CA", n)
		} else if c := rep.TLS.Certificates[0]; !slices.Contains(c.DNSNames, "localhost") || !c.NotAfter.After(time.Now()) {
			t.Errorf("certificate %+v", c)
		}
	}
	if _, ok := rep.Extensions["PIPELINING"]; !ok {
		t.Errorf("extensions %v lack PIPELINING", rep.Extensions)
	}
	if !slices.Contains(rep.AuthMechanisms, "PLAIN") {
		t.Errorf("auth mechanisms %v", rep.AuthMechanisms)
	}
	if rep.Login == nil || !rep.Login.OK || rep.Login.User != "u" {
		t.Errorf("login %+v", rep.Login)
	}
	if cmds := strings.Join(srv.Commands(), "\n"); strings.Contains(cmds, "MAIL") {
		t.Errorf("check sent a message:\n%s", cmds)
	}

	// A wrong password: the report says so, the exit code too.
	r = mailerRun(t, "check", "--server", srv.Addr(), "--tls-ca", ca, "--username", "u", "--password", "wrong")
	r.wantCode(t, exNoPerm)
	for _, want := range []string{"greeting", "TLS 1.", "certificate", "PLAIN", "failed as u"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestCheckNoTLS reports a server without STARTTLS: what it offers, and
// the failure of the required upgrade.
func TestCheckNoTLS(t *testing.T) {
	srv := plainServer(t)
	r := mailerRun(t, "check", "--server", srv.Addr())
	r.wantCode(t, exUnavailable)
	if !strings.Contains(r.stdout, "PIPELINING") || !strings.Contains(r.stderr, "does not offer STARTTLS") {
		t.Errorf("stdout:\n%s\nstderr: %s", r.stdout, r.stderr)
	}
	r = mailerRun(t, "check", "--server", srv.Addr(), "--security", "none")
	r.wantCode(t, 0)
	if !strings.Contains(r.stdout, "security    none") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

// TestCompletion asks Cobra's completion for a flag with fixed values, as
// the shell scripts of "mailer completion" do.
func TestCompletion(t *testing.T) {
	r := mailerRun(t, "__complete", "send", "--security", "")
	r.wantCode(t, 0)
	if !strings.Contains(r.stdout, "starttls-optional\n") {
		t.Errorf("completion of --security:\n%s", r.stdout)
	}
}

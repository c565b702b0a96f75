package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

// binary is the mailer command built once for every test.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailer-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mailer")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the mailer command:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// outcome is what one run of the binary gave.
type outcome struct {
	stdout, stderr string
	code           int
}

// invocation is one run of the binary to make.
type invocation struct {
	args  []string
	stdin string
	env   []string // added to the environment, NAME=value
	dir   string   // working directory; the package directory by default
	name  string   // the program name, to run it as "sendmail"
}

// mailerRun runs the built binary with args and returns what it printed and
// its exit code. MAILER_PASSWORD from the caller's environment is dropped.
func mailerRun(t *testing.T, args ...string) outcome {
	t.Helper()
	return invocation{args: args}.run(t)
}

func (in invocation) run(t *testing.T) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin := binary
	if in.name != "" {
		bin = filepath.Join(t.TempDir(), in.name)
		if err := os.Symlink(binary, bin); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, bin, in.args...)
	cmd.Dir = in.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, passwordEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, in.env...)
	cmd.Stdin = strings.NewReader(in.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := outcome{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	if err != nil && r.code < 0 {
		t.Fatalf("running mailer %s: %v\nstderr: %s", strings.Join(in.args, " "), err, r.stderr)
	}
	return r
}

// wantCode fails the test unless r exited with code; a failure's stderr
// must be one line without a Go stack trace.
func (r outcome) wantCode(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	if code != 0 {
		// One line of error; bulk's progress lines and a transcript may
		// come before it.
		for line := range strings.Lines(r.stderr) {
			if !strings.HasPrefix(line, "mailer: ") && !strings.HasPrefix(line, "row ") &&
				!strings.HasPrefix(line, "C: ") && !strings.HasPrefix(line, "S: ") {
				t.Errorf("stderr has a line that is not a one-line error:\n%s", r.stderr)
				break
			}
		}
		if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
			t.Errorf("stderr has a stack trace:\n%s", r.stderr)
		}
	}
}

// secret returns a fresh random password.
func secret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// caFile writes the CA that signed srv's certificate to a PEM file, found
// by a verified TLS session with the library: mailertest hands out only a
// pool, and a pool cannot be written out.
func caFile(t *testing.T, srv *mailertest.Server, implicit bool) string {
	t.Helper()
	sec := mailer.SecuritySTARTTLS
	if implicit {
		sec = mailer.SecurityTLS
	}
	c, err := mailer.NewConnection(srv.Addr(), mailer.WithSecurity(sec),
		mailer.WithTLSConfig(&tls.Config{RootCAs: srv.CertPool()}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, ok := c.TLSConnectionState()
	if !ok || len(st.VerifiedChains) == 0 {
		t.Fatal("no verified TLS chain from the test server")
	}
	chain := st.VerifiedChains[0]
	path := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[len(chain)-1].Raw})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// plainServer starts a mailertest server without TLS or auth.
func plainServer(t *testing.T, opts ...mailertest.Option) *mailertest.Server {
	t.Helper()
	srv := mailertest.NewServer(opts...)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// waitOne waits for the server's first message.
func waitOne(t *testing.T, srv *mailertest.Server) mailertest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatalf("no message arrived: %v", err)
	}
	return msgs[0]
}

// header returns the unfolded value of the named field of a received
// message, "" if absent.
func header(data []byte, name string) string {
	m := splitMessage(data)
	if v := m.values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

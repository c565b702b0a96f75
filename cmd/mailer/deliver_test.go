package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/gomailer/mailer/internal/testenv"
	"github.com/gomailer/mailer/mailertest"
)

// dkimKeys are generated once per test binary: no key is in the
// repository.
var dkimKeys = sync.OnceValues(func() (*rsa.PrivateKey, ed25519.PrivateKey) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return rk, ek
})

// writeKey writes key as PKCS#8 PEM in dir with mode perm.
func writeKey(t *testing.T, dir, name string, key crypto.Signer, perm os.FileMode) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), perm); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode passes through the umask; set it exactly.
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

// dkimFiles writes the RSA and the Ed25519 key, mode 0600, and returns
// their paths and the TXT records publishing them under the selectors
// "rsa" and "ed" of example.test.
func dkimFiles(t *testing.T) (rsaPath, edPath string, records map[string]string) {
	t.Helper()
	rk, ek := dkimKeys()
	dir := t.TempDir()
	der, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	records = map[string]string{
		"rsa._domainkey.example.test": "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der),
		"ed._domainkey.example.test":  "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(ek.Public().(ed25519.PublicKey)),
	}
	return writeKey(t, dir, "rsa.pem", rk, 0o600), writeKey(t, dir, "ed.pem", ek, 0o600), records
}

// verifyDKIM checks that msg carries one valid signature per selector,
// all by example.test, with go-msgauth's verifier.
func verifyDKIM(t *testing.T, msg []byte, records map[string]string) {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) {
			if r, ok := records[domain]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no TXT record for %s", domain)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != len(records) {
		t.Fatalf("%d signatures, want %d:\n%s", len(vs), len(records), msg)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature by %s: %v", v.Domain, v.Err)
		}
		if v.Domain != "example.test" {
			t.Errorf("signed by %q, want the sender's domain example.test", v.Domain)
		}
	}
}

// TestDKIMSend signs with an RSA and an Ed25519 key given as flags; the
// domain is the sender's.
func TestDKIMSend(t *testing.T) {
	rsaKey, edKey, records := dkimFiles(t)
	srv := plainServer(t)
	r := mailerRun(t, "send", "--server", srv.Addr(), "--security", "none",
		"--sender", "Signer signer@example.test", "--to", "r@example.com", "--subject", "signed", "--body", "hello\n",
		"--dkim-key", rsaKey, "--dkim-selector", "rsa", "--dkim-key", edKey, "--dkim-selector", "ed")
	r.wantCode(t, 0)
	m := waitOne(t, srv)
	verifyDKIM(t, m.Data, records)
	// The verifier must be able to fail: a changed subject breaks both.
	tampered := bytes.Replace(m.Data, []byte("Subject: signed"), []byte("Subject: changed"), 1)
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(tampered), &dkim.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) { return []string{records[domain]}, nil },
	})
	if err != nil || len(vs) != 2 || vs[0].Err == nil || vs[1].Err == nil {
		t.Errorf("a tampered message verified: %v %+v", err, vs)
	}
}

// TestDKIMSendmailProfile signs a sendmail -t message with the keys named
// in the SMTP profile.
func TestDKIMSendmailProfile(t *testing.T) {
	rsaKey, edKey, records := dkimFiles(t)
	srv := plainServer(t)
	profile := filepath.Join(t.TempDir(), "smtp.yaml")
	yaml := "SMTP:\n  SERVER: " + srv.Addr() + "\n  SECURITY: none\n" +
		"  DKIM_KEY:\n    - " + rsaKey + "\n    - " + edKey + "\n  DKIM_SELECTOR: [rsa, ed]\n  DKIM_DOMAIN: example.test\n"
	if err := os.WriteFile(profile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	msg := "From: Other <someone@other.example>\nTo: r@example.com\nBcc: hidden@example.com\nSubject: signed by profile\n\nbody\n"
	invocation{args: []string{"sendmail", "--profile-smtp", profile, "-t", "-i"}, stdin: msg}.run(t).wantCode(t, 0)
	m := waitOne(t, srv)
	if !slices.Equal(m.To, []string{"r@example.com", "hidden@example.com"}) {
		t.Errorf("RCPT TO %v", m.To)
	}
	if bytes.Contains(m.Data, []byte("hidden@")) {
		t.Errorf("the Bcc header was sent:\n%s", m.Data)
	}
	if id := header(m.Data, "Message-ID"); !regexp.MustCompile(`^<[A-Z2-7]{26}@other\.example>$`).MatchString(id) {
		t.Errorf("Message-ID %q, want one added at the From domain", id)
	}
	verifyDKIM(t, m.Data, records)
}

// TestPostfixDKIM: a message signed by mailer sendmail still verifies in
// the Maildir copy the real Postfix delivered.
func TestPostfixDKIM(t *testing.T) {
	pf := testenv.Postfix(t)
	rsaKey, edKey, records := dkimFiles(t)
	subject := "cli dkim " + secret(t)
	msg := "From: Signer <signer@example.test>\nTo: dkim@example.test\nSubject: " + subject +
		"\n\nA line long enough to be worth signing, and a second one\nwith trailing space \n"
	invocation{args: []string{"sendmail", "--server", pf.Plain, "--security", "none", "-t", "-i",
		"--dkim-key", rsaKey, "--dkim-key", edKey, "--dkim-selector", "rsa", "--dkim-selector", "ed"},
		stdin: msg}.run(t).wantCode(t, 0)
	got := pf.WaitMessage(t, subject, 30*time.Second)
	// Maildir files have Unix line ends; the message on the wire had CRLF.
	verifyDKIM(t, bytes.ReplaceAll(bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n")), records)
}

// TestDKIMKeyRefused: a key file others may read, a key of the wrong type
// or size, and keys without selectors are refused before anything is
// sent, with one line each.
func TestDKIMKeyRefused(t *testing.T) {
	rsaKey, _, _ := dkimFiles(t)
	dir := t.TempDir()
	rk, _ := dkimKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	open := writeKey(t, dir, "open.pem", rk, 0o644)
	srv := plainServer(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		say  string
	}{
		{"world-readable", []string{"--dkim-key", open, "--dkim-selector", "s"}, exConfig, "chmod 600 " + open},
		{"small RSA", []string{"--dkim-key", writeKey(t, dir, "small.pem", small, 0o600), "--dkim-selector", "s"}, exConfig, "RSA key of 1024 bits: at least 2048"},
		{"ECDSA", []string{"--dkim-key", writeKey(t, dir, "ec.pem", ec, 0o600), "--dkim-selector", "s"}, exConfig, "use RSA (2048 bits or more) or Ed25519"},
		{"missing", []string{"--dkim-key", filepath.Join(dir, "nope.pem"), "--dkim-selector", "s"}, exConfig, "does not exist"},
		{"no selector", []string{"--dkim-key", rsaKey}, exUsage, "1 DKIM keys and 0 selectors"},
		{"domain alone", []string{"--dkim-domain", "example.test"}, exUsage, "--dkim-domain without --dkim-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"send", "--server", srv.Addr(), "--security", "none",
				"--sender", "s@example.test", "--to", "r@example.com", "--subject", "x"}, tc.args...)
			r := mailerRun(t, args...)
			r.wantCode(t, tc.code)
			if !strings.Contains(r.stderr, tc.say) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.say)
			}
			// sendmail refuses it the same way.
			sm := append([]string{"sendmail", "--server", srv.Addr(), "--security", "none", "-i", "r@example.com"}, tc.args...)
			invocation{args: sm, stdin: "From: s@example.test\n\nx\n"}.run(t).wantCode(t, tc.code)
		})
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages sent with a refused key", n)
	}
}

// TestRetry: a 451 to the first MAIL is tried again with --retry 2, and is
// EX_TEMPFAIL without it, for send and for sendmail -t (through SendEML).
func TestRetry(t *testing.T) {
	fault := mailertest.WithFault(mailertest.Fault{Command: "MAIL", Conn: 1, Nth: 1, Action: mailertest.Reply,
		Code: 451, Enhanced: "4.3.0", Text: "try again"})
	for name, args := range map[string][]string{
		"send":     {"send", "--sender", "s@example.com", "--to", "r@example.com", "--subject", "retried"},
		"sendmail": {"sendmail", "-t", "-i"},
	} {
		t.Run(name, func(t *testing.T) {
			stdin := "From: s@example.com\nTo: r@example.com\nSubject: retried\n\nbody\n"
			srv := plainServer(t, fault)
			r := invocation{args: append(slices.Clone(args), "--server", srv.Addr(), "--security", "none"), stdin: stdin}.run(t)
			r.wantCode(t, exTempFail)
			if !strings.Contains(r.stderr, "451 4.3.0 try again") {
				t.Errorf("stderr %q lacks the reply", r.stderr)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Fatalf("%d messages without --retry", n)
			}

			srv = plainServer(t, fault)
			r = invocation{args: append(slices.Clone(args), "--server", srv.Addr(), "--security", "none", "--retry", "2"), stdin: stdin}.run(t)
			r.wantCode(t, 0)
			m := waitOne(t, srv)
			if header(m.Data, "Subject") != "retried" || !slices.Equal(m.To, []string{"r@example.com"}) {
				t.Errorf("delivered %v:\n%s", m.To, m.Data)
			}
		})
	}
}

// TestOutcomeUnknownNotTempfail: a connection lost after the final dot is
// EX_UNAVAILABLE with a warning, never EX_TEMPFAIL, so that a caller does
// not send the message twice; --retry does not resend it.
func TestOutcomeUnknownNotTempfail(t *testing.T) {
	srv := plainServer(t, mailertest.WithFault(mailertest.Fault{Command: "DOT", Conn: 1, Action: mailertest.Drop}))
	r := invocation{args: []string{"sendmail", "--server", srv.Addr(), "--security", "none", "-i", "--retry", "3", "r@example.com"},
		stdin: "From: s@example.com\nSubject: once\n\nbody\n"}.run(t)
	r.wantCode(t, exUnavailable)
	if !strings.Contains(r.stderr, "may have been delivered") {
		t.Errorf("stderr %q does not warn", r.stderr)
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections: a message that may have been delivered was sent again", n)
	}
}

// writeRows writes a CSV of n recipients and returns its path and the
// result file's.
func writeRows(t *testing.T, n int) (csvPath, results string) {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("email,name\n")
	for i := range n {
		fmt.Fprintf(&b, "r%d@example.com,R%d\n", i+1, i+1)
	}
	csvPath = filepath.Join(dir, "rows.csv")
	if err := os.WriteFile(csvPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return csvPath, filepath.Join(dir, "results.jsonl")
}

// TestBulkRate: a server that takes one message per 600 ms refuses the
// second of a fast run; --rate 1/1s paces the run so that all are taken.
func TestBulkRate(t *testing.T) {
	bulk := func(srv *mailertest.Server, extra ...string) outcome {
		csvPath, results := writeRows(t, 3)
		return mailerRun(t, append([]string{"send", "--server", srv.Addr(), "--security", "none", "--sender", "s@example.com",
			"--recipients", csvPath, "--results", results, "--subject", "paced", "--body", "Dear {{.name}}"}, extra...)...)
	}
	srv := plainServer(t, mailertest.WithRateLimit(1, 600*time.Millisecond))
	bulk(srv).wantCode(t, exTempFail)

	srv = plainServer(t, mailertest.WithRateLimit(1, 600*time.Millisecond))
	start := time.Now()
	r := bulk(srv, "--rate", "1/1s")
	r.wantCode(t, 0)
	if elapsed := time.Since(start); elapsed < 1900*time.Millisecond {
		t.Errorf("3 messages at 1/1s took %v", elapsed)
	}
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("%d messages, want 3", n)
	}
	if m := regexp.MustCompile(`; (\d+) waited for the rate limit`).FindStringSubmatch(r.stderr); m == nil {
		t.Errorf("the summary does not count the waits:\n%s", r.stderr)
	} else if n, _ := strconv.Atoi(m[1]); n < 1 || n > 2 {
		t.Errorf("%d waits for 3 messages at burst 1", n)
	}
}

// TestBulkMaxPerSession: a server that takes one message per connection
// gets each on its own session.
func TestBulkMaxPerSession(t *testing.T) {
	srv := plainServer(t, mailertest.WithMaxMessagesPerConnection(1))
	csvPath, results := writeRows(t, 3)
	r := mailerRun(t, "send", "--server", srv.Addr(), "--security", "none", "--sender", "s@example.com",
		"--recipients", csvPath, "--results", results, "--subject", "one each", "--body", "x", "--max-per-session", "1")
	r.wantCode(t, 0)
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("%d messages, want 3", n)
	}
	if n := srv.Connections(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
	if !strings.Contains(r.stderr, "3 sessions") {
		t.Errorf("the summary does not count the sessions:\n%s", r.stderr)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string][2]int64{
		"100/1m": {100, int64(time.Minute)}, "5/s": {5, int64(time.Second)}, " 3600 / 1h ": {3600, int64(time.Hour)},
		"1/1.5s": {1, int64(1500 * time.Millisecond)},
	} {
		n, per, err := parseRate(in)
		if err != nil || int64(n) != want[0] || int64(per) != want[1] {
			t.Errorf("parseRate(%q) = %d, %v, %v", in, n, per, err)
		}
	}
	for _, in := range []string{"", "100", "0/1m", "-1/s", "x/1m", "10/", "10/0s", "10/-1m", "10/fortnight"} {
		if _, _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
}

// TestBulkOutcomeUnknown: a row whose connection was lost after its final
// dot is recorded as "unknown" and is not sent again by the next run.
func TestBulkOutcomeUnknown(t *testing.T) {
	csvPath, results := writeRows(t, 3)
	args := func(srv *mailertest.Server) []string {
		return []string{"send", "--server", srv.Addr(), "--security", "none", "--sender", "s@example.com",
			"--recipients", csvPath, "--results", results, "--subject", "once", "--body", "x", "--retry", "3"}
	}
	srv := plainServer(t, mailertest.WithFault(mailertest.Fault{Command: "DOT", Conn: 1, Nth: 2, Action: mailertest.Drop}))
	r := mailerRun(t, args(srv)...)
	r.wantCode(t, exUnavailable)
	status := map[int]string{}
	unknown := 0
	for _, rec := range readResultFile(t, results) {
		status[rec.Row] = rec.Status
		if rec.Status == "unknown" {
			unknown++
		}
	}
	// Row 3 may have been pipelined behind row 2 on the lost connection.
	if status[1] != "sent" || status[2] != "unknown" {
		t.Fatalf("rows recorded as %v, want 1 sent and 2 unknown", status)
	}
	if say := fmt.Sprintf("not the %d of unknown outcome", unknown); !strings.Contains(r.stderr, say) {
		t.Errorf("stderr lacks %q:\n%s", say, r.stderr)
	}

	srv2 := plainServer(t)
	r = mailerRun(t, args(srv2)...)
	r.wantCode(t, 0)
	if say := fmt.Sprintf("%d of unknown outcome", unknown); !strings.Contains(r.stderr, say) || !strings.Contains(r.stderr, "delete their lines") {
		t.Errorf("the rerun does not say what it skipped (%q):\n%s", say, r.stderr)
	}
	for _, m := range srv2.Messages() {
		for _, to := range m.To {
			if row, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(to, "r"), "@example.com")); status[row] == "unknown" {
				t.Errorf("row %d, of unknown outcome, was sent again", row)
			}
		}
	}
	var want []string
	for row, st := range status {
		if st == "failed" {
			want = append(want, fmt.Sprintf("r%d@example.com", row))
		}
	}
	if n := len(srv2.Messages()); n != len(want) {
		t.Errorf("rerun sent %d messages, want the %d failed rows %v", n, len(want), want)
	}
}

// TestBulkInterrupt: SIGINT stops a paced run after the messages in
// flight, every one of them recorded; the next run sends exactly the rest.
func TestBulkInterrupt(t *testing.T) {
	csvPath, results := writeRows(t, 6)
	srv := plainServer(t)
	args := []string{"send", "--server", srv.Addr(), "--security", "none", "--sender", "s@example.com",
		"--recipients", csvPath, "--results", results, "--subject", "paced", "--body", "x", "--rate", "4/1s"}
	cmd := exec.Command(binary, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(srv.Messages()) < 1 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no message arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != exTempFail {
		t.Fatalf("exit %d (%v), want %d\n%s", code, err, exTempFail, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted: ") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	first := len(srv.Messages())
	recorded := readResultFile(t, results)
	if first == 6 || len(recorded) != first {
		t.Fatalf("%d messages sent before the interrupt took effect, %d recorded", first, len(recorded))
	}

	mailerRun(t, args...).wantCode(t, 0)
	seen := map[string]int{}
	for _, m := range srv.Messages() {
		seen[m.To[0]]++
	}
	for i := 1; i <= 6; i++ {
		if to := fmt.Sprintf("r%d@example.com", i); seen[to] != 1 {
			t.Errorf("%s received %d messages, want 1", to, seen[to])
		}
	}
}

// TestTempfailAfterRetries: a server that drops every connection at EHLO
// is tried --retry times, and sendmail then exits EX_TEMPFAIL.
func TestTempfailAfterRetries(t *testing.T) {
	srv := plainServer(t, mailertest.WithFault(mailertest.Fault{Command: "EHLO", Action: mailertest.Drop}))
	r := invocation{args: []string{"sendmail", "--server", srv.Addr(), "--security", "none", "-i", "--retry", "2", "r@example.com"},
		stdin: "From: s@example.com\nSubject: dropped\n\nbody\n"}.run(t)
	r.wantCode(t, exTempFail)
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want 2 (--retry 2)", n)
	}
}

// TestDeliveryFlagErrors: wrong pacing and retry values are usage errors.
func TestDeliveryFlagErrors(t *testing.T) {
	base := []string{"send", "--server", "127.0.0.1:1", "--security", "none", "--sender", "s@example.com", "--to", "r@example.com"}
	for _, extra := range [][]string{
		{"--rate", "fast"}, {"--rate", "0/1m"}, {"--rate", "10/1m", "--rate-burst", "0"},
		{"--rate-burst", "5"}, {"--retry", "0"}, {"--retry", "-1"},
	} {
		r := mailerRun(t, append(slices.Clone(base), extra...)...)
		r.wantCode(t, exUsage)
		if !strings.Contains(r.stderr, extra[len(extra)-2]) {
			t.Errorf("%v: stderr %q does not name the flag", extra, r.stderr)
		}
	}
}

package mailer

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/internal/testenv"
)

// rawMessage returns a message with a unique Message-ID, and that ID.
func rawMessage(subject string) (string, string) {
	b := make([]byte, 8)
	rand.Read(b)
	id := hex.EncodeToString(b) + "@example.test"
	msg := "From: Sender <sender@example.test>\r\n" +
		"To: Someone <someone@example.test>\r\n" +
		"Subject: " + subject + "\r\n" +
		"Message-ID: <" + id + ">\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Hello from the integration test.\r\n" +
		".leading dot survives\r\n" +
		"\r\n" +
		"Last line.\r\n"
	return msg, id
}

// delivered checks that Postfix's Maildir file ends with msg byte for byte
// (Postfix stores LF line endings and prepends its trace headers).
func delivered(t *testing.T, env *testenv.PostfixEnv, msg, id string) {
	t.Helper()
	got := env.WaitMessage(t, id, 30*time.Second)
	want := strings.ReplaceAll(msg, "\r\n", "\n")
	if !bytes.HasSuffix(got, []byte(want)) {
		t.Errorf("delivered file does not end with the message sent:\n%s", got)
	}
}

func TestPostfixDeliversInEverySecurityMode(t *testing.T) {
	env := testenv.Postfix(t)
	tlsCfg := &tls.Config{RootCAs: env.CAPool}
	cases := []struct {
		name string
		addr string
		opts []Option
		tls  bool
	}{
		{"plain", env.Plain, []Option{WithSecurity(SecurityNone)}, false},
		{"starttls", env.Submission, []Option{WithSecurity(SecuritySTARTTLS), WithTLSConfig(tlsCfg), WithCredentials(env.User, env.Password)}, true},
		{"implicit", env.SMTPS, []Option{WithSecurity(SecurityTLS), WithTLSConfig(tlsCfg), WithCredentials(env.User, env.Password)}, true},
		{"auto-starttls", strings.Replace(env.Submission, "127.0.0.1", "localhost", 1), []Option{WithTLSConfig(tlsCfg), WithCredentials(env.User, env.Password)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var transcript bytes.Buffer
			c, err := NewConnection(tc.addr, append(tc.opts, WithDebugWriter(&transcript, false), WithLocalName("client.example.test"))...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg, id := rawMessage("integration " + tc.name)
			res, err := c.SendRaw(testCtx(t), Envelope{From: "sender@example.test", To: []string{"someone@example.test"}}, strings.NewReader(msg))
			if err != nil {
				t.Fatalf("%v\n%s", err, transcript.String())
			}
			if !strings.Contains(res.Response, "queued as") {
				t.Errorf("response %q", res.Response)
			}
			if _, ok := c.TLSConnectionState(); ok != tc.tls {
				t.Errorf("TLS = %v, want %v", ok, tc.tls)
			}
			if !c.HasExtension("PIPELINING") || !c.HasExtension("8BITMIME") {
				t.Errorf("extensions %v", c.Extensions())
			}
			delivered(t, env, msg, id)
			if env.Password != "" && strings.Contains(transcript.String(), env.Password) {
				t.Error("password in transcript")
			}
			// A second message reuses the session.
			msg2, id2 := rawMessage("second " + tc.name)
			if _, err := c.SendRaw(testCtx(t), Envelope{From: "sender@example.test", To: []string{"other@example.test"}}, strings.NewReader(msg2)); err != nil {
				t.Fatal(err)
			}
			delivered(t, env, msg2, id2)
			if n := strings.Count(transcript.String(), "C: EHLO"); tc.name == "plain" && n != 1 {
				t.Errorf("%d EHLOs for two messages on one session", n)
			}
		})
	}
}

func TestPostfixRefusals(t *testing.T) {
	env := testenv.Postfix(t)
	c, err := NewConnection(env.Plain, WithSecurity(SecurityNone))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg, _ := rawMessage("refusals")
	_, err = c.SendRaw(testCtx(t), Envelope{From: "sender@example.test",
		To: []string{"ok@example.test", "reject@example.test", "tempfail@example.test"}}, strings.NewReader(msg))
	var re *RecipientsError
	if !errors.As(err, &re) || len(re.Rejected) != 2 {
		t.Fatalf("err = %v, want two refusals", err)
	}
	var perm, temp *SMTPError
	errors.As(re.Rejected[0].Err, &perm)
	errors.As(re.Rejected[1].Err, &temp)
	if perm == nil || perm.Code != 550 || perm.EnhancedCode != (EnhancedCode{5, 1, 1}) || perm.Temporary() {
		t.Errorf("reject@: %v", re.Rejected[0].Err)
	}
	if temp == nil || temp.Code != 451 || !temp.Temporary() {
		t.Errorf("tempfail@: %v", re.Rejected[1].Err)
	}
	// The session was reset and still works.
	msg, id := rawMessage("after refusals")
	if _, err := c.SendRaw(testCtx(t), Envelope{From: "sender@example.test", To: []string{"ok@example.test"}}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	delivered(t, env, msg, id)
}

func TestPostfixSizeLimit(t *testing.T) {
	env := testenv.Postfix(t)
	c, err := NewConnection(env.Small, WithSecurity(SecurityNone))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg, _ := rawMessage("too big")
	big := msg + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 3000)
	env2 := Envelope{From: "sender@example.test", To: []string{"someone@example.test"}}
	if _, err := c.SendRaw(testCtx(t), env2, strings.NewReader(big)); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("known size: err = %v, want ErrMessageTooLarge", err)
	}
	// Size unknown in advance: the server refuses it after the data.
	_, err = c.SendRaw(testCtx(t), env2, io.MultiReader(strings.NewReader(big)))
	var se *SMTPError
	// Postfix announces CHUNKING, so the refusal comes at BDAT.
	if !errors.As(err, &se) || se.Code != 552 || se.Command != "BDAT" {
		t.Errorf("unknown size: err = %v, want 552 at BDAT", err)
	}
}

func TestPostfixWrongPassword(t *testing.T) {
	env := testenv.Postfix(t)
	c, err := NewConnection(env.Submission, WithTLSConfig(&tls.Config{RootCAs: env.CAPool}),
		WithCredentials(env.User, "wrong-"+env.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Connect(testCtx(t))
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 535 || !strings.HasPrefix(se.Command, "AUTH") {
		t.Fatalf("err = %v, want 535 at AUTH", err)
	}
	if strings.Contains(err.Error(), env.Password) {
		t.Error("password in error")
	}
}

func TestPostfixAuthMechanisms(t *testing.T) {
	env := testenv.Postfix(t)
	tlsCfg := &tls.Config{RootCAs: env.CAPool}
	ports := map[string][]Option{
		"starttls": {WithPort(portOf(env.Submission)), WithSecurity(SecuritySTARTTLS)},
		"implicit": {WithPort(portOf(env.SMTPS)), WithSecurity(SecurityTLS)},
	}
	for portName, portOpts := range ports {
		for _, mech := range []string{AuthPlain, AuthLogin, AuthCRAMMD5, AuthSCRAMSHA1, AuthSCRAMSHA256} {
			t.Run(portName+"/"+mech, func(t *testing.T) {
				var transcript strings.Builder
				opts := append(append([]Option{}, portOpts...), WithTLSConfig(tlsCfg), WithAuthMechanisms(mech),
					WithDebugWriter(&transcript, false))
				c, err := NewConnection("localhost", append(opts, WithCredentials(env.User, env.Password))...)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				msg, id := rawMessage("auth " + portName + " " + mech)
				if _, err := c.SendRaw(testCtx(t), Envelope{From: "sender@example.test", To: []string{"someone@example.test"}}, strings.NewReader(msg)); err != nil {
					t.Fatalf("%v\n%s", err, transcript.String())
				}
				if !strings.Contains(transcript.String(), "C: AUTH "+mech) {
					t.Errorf("did not use %s:\n%s", mech, transcript.String())
				}
				delivered(t, env, msg, id)
				bad, _ := NewConnection("localhost", append(opts, WithCredentials(env.User, "not-"+env.Password))...)
				defer bad.Close()
				err = bad.Connect(testCtx(t))
				var se *SMTPError
				if !errors.As(err, &se) || se.Code != 535 || se.Command != "AUTH "+mech {
					t.Errorf("wrong password: %v", err)
				}
				for _, s := range []string{env.Password, base64.StdEncoding.EncodeToString([]byte(env.Password))} {
					if strings.Contains(transcript.String()+fmt.Sprint(err), s) {
						t.Errorf("secret %q in the transcript or error", s)
					}
				}
			})
		}
	}
	var transcript strings.Builder
	c, _ := NewConnection(env.Submission, WithTLSConfig(tlsCfg), WithCredentials(env.User, env.Password), WithDebugWriter(&transcript, false))
	defer c.Close()
	if err := c.Connect(testCtx(t)); err != nil || !strings.Contains(transcript.String(), "C: AUTH SCRAM-SHA-256") {
		t.Errorf("automatic selection: %v\n%s", err, transcript.String())
	}
	if got := strings.Join(c.AuthMechanisms(), " "); !strings.Contains(got, "SCRAM-SHA-256") || !strings.Contains(got, "CRAM-MD5") {
		t.Errorf("AuthMechanisms = %s", got)
	}
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

func newTestServer(t *testing.T, opts ...mailertest.Option) *mailertest.Server {
	t.Helper()
	s := mailertest.NewServer(opts...)
	t.Cleanup(func() { s.Close() })
	return s
}

// connect makes a Connection to srv that trusts its CA.
func connect(t *testing.T, srv *mailertest.Server, opts ...Option) *Connection {
	t.Helper()
	base := []Option{WithPort(srv.Port())}
	if pool := srv.CertPool(); pool != nil {
		base = append(base, WithTLSConfig(&tls.Config{RootCAs: pool}))
	}
	c, err := NewConnection("localhost", append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const rawBody = "From: a@example.test\r\nTo: b@example.test\r\nSubject: test\r\n\r\nHello.\r\n"

func sendRaw(t *testing.T, c *Connection) (*SendResult, error) {
	return c.SendRaw(testCtx(t), Envelope{From: "a@example.test", To: []string{"b@example.test"}}, strings.NewReader(rawBody))
}

func TestSecurityModesAgainstMailertest(t *testing.T) {
	cases := []struct {
		name string
		srv  []mailertest.Option
		opts []Option
		tls  bool
	}{
		{"auto-starttls", []mailertest.Option{mailertest.WithSTARTTLS()}, nil, true},
		{"starttls", []mailertest.Option{mailertest.WithSTARTTLS()}, []Option{WithSecurity(SecuritySTARTTLS)}, true},
		{"optional-offered", []mailertest.Option{mailertest.WithSTARTTLS()}, []Option{WithSecurity(SecuritySTARTTLSOptional)}, true},
		{"implicit", []mailertest.Option{mailertest.WithImplicitTLS()}, []Option{WithSecurity(SecurityTLS)}, true},
		{"none", nil, []Option{WithSecurity(SecurityNone)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(t, tc.srv...)
			c := connect(t, srv, append(tc.opts, WithLocalName("client.example.test"))...)
			if _, err := sendRaw(t, c); err != nil {
				t.Fatal(err)
			}
			msgs, err := srv.WaitMessages(testCtx(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			if msgs[0].TLS != tc.tls || string(msgs[0].Data) != rawBody || msgs[0].Helo != "client.example.test" {
				t.Errorf("received %+v", msgs[0])
			}
			st, ok := c.TLSConnectionState()
			if ok != tc.tls || (ok && !st.HandshakeComplete) {
				t.Errorf("TLSConnectionState ok=%v", ok)
			}
			for _, cmd := range srv.Commands() {
				if strings.HasPrefix(cmd, "EHLO") && cmd != "EHLO client.example.test" {
					t.Errorf("client said %q", cmd)
				}
			}
		})
	}
}

func TestCertificateVerified(t *testing.T) {
	srv := newTestServer(t, mailertest.WithSTARTTLS())
	c, err := NewConnection("localhost", WithPort(srv.Port())) // system roots: untrusted CA
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = sendRaw(t, c)
	var unknown x509.UnknownAuthorityError
	if !errors.Is(err, ErrTLSRequired) || !errors.As(err, &unknown) {
		t.Fatalf("err = %v, want an unknown-authority error", err)
	}
	if len(srv.Messages()) != 0 || strings.Contains(strings.Join(srv.Commands(), "|"), "MAIL") {
		t.Error("something was sent over an unverified connection")
	}
	// The certificate is checked against the name dialled.
	bad := connect(t, srv, WithTLSConfig(&tls.Config{RootCAs: srv.CertPool(), ServerName: "mx.example.org"}))
	var host x509.HostnameError
	if _, err := sendRaw(t, bad); !errors.As(err, &host) {
		t.Errorf("wrong name: err = %v, want a hostname error", err)
	}
	skip := connect(t, srv, WithTLSConfig(&tls.Config{ServerName: "mx.example.org"}), WithInsecureSkipVerify())
	if _, err := sendRaw(t, skip); err != nil {
		t.Errorf("WithInsecureSkipVerify: %v", err)
	}
}

func TestTLSVersionsApplied(t *testing.T) {
	srv := newTestServer(t, mailertest.WithImplicitTLS())
	c := connect(t, srv, WithSecurity(SecurityTLS), WithTLSVersions(tls.VersionTLS12, tls.VersionTLS12),
		WithEncryption("SSLv23", "ECDHE-ECDSA-AES128-GCM-SHA256"), WithTLSVersions(tls.VersionTLS12, tls.VersionTLS12))
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st, _ := c.TLSConnectionState()
	if st.Version != tls.VersionTLS12 || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Errorf("negotiated %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	c13 := connect(t, srv, WithEncryption("SSLv23", ""), WithTLSVersions(tls.VersionTLS13, 0))
	if err := c13.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if st, _ := c13.TLSConnectionState(); st.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %s", tls.VersionName(st.Version))
	}
}

func TestServerInfo(t *testing.T) {
	srv := newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithUser("u", "p"), mailertest.WithMaxMessageSize(1<<20),
		mailertest.WithSMTPUTF8())
	c := connect(t, srv)
	if c.Extensions() != nil || c.AuthMechanisms() != nil {
		t.Error("server info before any session")
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.AuthMechanisms(), " "); got != "PLAIN LOGIN CRAM-MD5" {
		t.Errorf("AuthMechanisms = %q (after STARTTLS)", got)
	}
	if n, ok := c.MaxMessageSize(); !ok || n != 1<<20 {
		t.Errorf("MaxMessageSize = %d %v", n, ok)
	}
	if !c.HasExtension("SMTPUTF8") || c.HasExtension("STARTTLS") {
		t.Errorf("extensions after STARTTLS: %v", c.Extensions())
	}
}

// TestFaultsGiveDocumentedErrors drives every fault mailertest has through
// a Connection and checks the error and that it comes within the bound.
func TestFaultsGiveDocumentedErrors(t *testing.T) {
	type check func(error) bool
	isDeadline := func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }
	is421 := func(err error) bool {
		var se *SMTPError
		return errors.As(err, &se) && se.Code == 421 && se.Temporary()
	}
	isNetwork := func(err error) bool {
		var se *SMTPError
		return err != nil && !errors.As(err, &se) && !errors.Is(err, ErrOutcomeUnknown)
	}
	isUnknown := func(err error) bool { return errors.Is(err, ErrOutcomeUnknown) }
	noChunking := []mailertest.Option{mailertest.WithoutChunking()}
	cases := []struct {
		cmd    string
		action mailertest.Action
		want   check
		what   string
		opts   []mailertest.Option
	}{
		{"GREETING", mailertest.Stall, func(err error) bool { return isDeadline(err) && strings.Contains(err.Error(), "greeting") }, "greeting timeout", nil},
		{"GREETING", mailertest.Reply421, is421, "421", nil},
		{"GREETING", mailertest.Drop, isNetwork, "network error", nil},
		{"EHLO", mailertest.Stall, isDeadline, "deadline", nil},
		{"EHLO", mailertest.Reply421, is421, "421", nil},
		{"STARTTLS", mailertest.Stall, isDeadline, "deadline", nil},
		{"STARTTLS", mailertest.Drop, isNetwork, "network error", nil},
		{"AUTH", mailertest.Reply421, is421, "421", nil},
		{"MAIL", mailertest.Stall, isDeadline, "deadline", nil},
		{"MAIL", mailertest.Reply421, is421, "421", nil},
		// With CHUNKING the message goes out with MAIL (one round trip), so
		// a connection lost before MAIL's reply may have delivered it.
		{"MAIL", mailertest.Drop, isUnknown, "ErrOutcomeUnknown", nil},
		{"MAIL", mailertest.Drop, isNetwork, "network error", noChunking},
		{"RCPT", mailertest.Reply421, is421, "421", nil},
		{"RCPT", mailertest.Stall, isDeadline, "deadline", nil},
		{"DATA", mailertest.Reply421, is421, "421", noChunking},
		{"DATA", mailertest.Drop, isNetwork, "network error", noChunking},
		{"BDAT", mailertest.Reply421, is421, "421", nil},
		{"BDAT", mailertest.Drop, isUnknown, "ErrOutcomeUnknown", nil},
		{"DOT", mailertest.Drop, func(err error) bool { return errors.Is(err, ErrOutcomeUnknown) }, "ErrOutcomeUnknown", nil},
		{"DOT", mailertest.Stall, func(err error) bool { return isDeadline(err) && errors.Is(err, ErrOutcomeUnknown) }, "deadline, outcome unknown", nil},
		{"DOT", mailertest.Reply421, is421, "421", nil},
		{"DOT", mailertest.Drop, isUnknown, "ErrOutcomeUnknown", noChunking},
		{"DOT", mailertest.Stall, func(err error) bool { return isDeadline(err) && isUnknown(err) }, "deadline, outcome unknown", noChunking},
		{"DOT", mailertest.Reply421, is421, "421", noChunking},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%d/chunking=%v", tc.cmd, tc.action, tc.opts == nil), func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, append([]mailertest.Option{mailertest.WithSTARTTLS(), mailertest.WithUser("u", "p"),
				mailertest.WithFault(mailertest.Fault{Command: tc.cmd, Action: tc.action})}, tc.opts...)...)
			c := connect(t, srv, WithCredentials("u", "p"), WithGreetingTimeout(500*time.Millisecond),
				WithTimeout(500*time.Millisecond), WithDataTimeout(500*time.Millisecond))
			start := time.Now()
			_, err := sendRaw(t, c)
			if !tc.want(err) {
				t.Errorf("err = %v, want %s", err, tc.what)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestRefusedRecipientsThroughMailertest(t *testing.T) {
	srv := newTestServer(t, mailertest.WithRecipientReply("bad@example.test", 550, "5.1.1", "no such user"))
	c := connect(t, srv, WithSecurity(SecurityNone))
	_, err := c.SendRaw(testCtx(t), Envelope{From: "a@example.test", To: []string{"b@example.test", "bad@example.test"}},
		strings.NewReader(rawBody))
	var re *RecipientsError
	if !errors.As(err, &re) || re.Rejected[0].Address != "bad@example.test" {
		t.Fatalf("err = %v", err)
	}
	if len(srv.Messages()) != 0 {
		t.Error("message sent despite a refusal")
	}
	if _, err := sendRaw(t, c); err != nil {
		t.Fatalf("next send: %v", err)
	}
	if srv.Connections() != 1 {
		t.Errorf("%d connections", srv.Connections())
	}
}

func TestRequiredAuthBeforeMail(t *testing.T) {
	srv := newTestServer(t, mailertest.WithRequireAuth(), mailertest.WithSTARTTLS(), mailertest.WithUser("u", "p"))
	_, err := sendRaw(t, connect(t, srv))
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 530 || se.Command != "MAIL" {
		t.Fatalf("err = %v, want 530 at MAIL", err)
	}
	if _, err := sendRaw(t, connect(t, srv, WithCredentials("u", "p"))); err != nil {
		t.Fatal(err)
	}
}

package mailer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/gomailer/mailer/mailertest"
)

func TestCRAMMD5Vector(t *testing.T) {
	// RFC 2195 section 2.
	c := &cramMD5Client{"tim", "tanstaaftanstaaf"}
	got, _ := c.Next([]byte("<1896.697170952@postoffice.reston.mci.net>"))
	if string(got) != "tim b913a602c7eda7a495b4e6e7334d3890" {
		t.Errorf("got %q", got)
	}
}

func TestSCRAMVectors(t *testing.T) {
	cases := []struct {
		mech, nonce, serverFirst, clientFinal, serverFinal string
		c                                                  func(string, string) *scramClient
	}{
		{ // RFC 5802 section 5
			AuthSCRAMSHA1, "fyko+d2lbbFgONRv9qkxdawL",
			"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
			"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
			"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
			func(u, p string) *scramClient {
				return newSCRAMClient(context.Background(), AuthSCRAMSHA1, sha1Hash, u, p)
			},
		},
		{ // RFC 7677 section 3
			AuthSCRAMSHA256, "rOprNGfwEbeRWgbNEkqO",
			"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
			"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
			func(u, p string) *scramClient {
				return newSCRAMClient(context.Background(), AuthSCRAMSHA256, sha256Hash, u, p)
			},
		},
	}
	for _, tc := range cases {
		c := tc.c("user", "pencil")
		c.nonce = tc.nonce
		mech, first, _ := c.Start()
		if mech != tc.mech || string(first) != "n,,n=user,r="+tc.nonce {
			t.Errorf("%s: start %s %q", tc.mech, mech, first)
		}
		final, err := c.Next([]byte(tc.serverFirst))
		if err != nil || string(final) != tc.clientFinal {
			t.Errorf("%s: client-final %q, %v", tc.mech, final, err)
		}
		if resp, err := c.Next([]byte(tc.serverFinal)); err != nil || len(resp) != 0 || !c.verified() {
			t.Errorf("%s: server-final: %q %v", tc.mech, resp, err)
		}
		// A server that does not know the password cannot sign.
		bad := tc.c("user", "pencil")
		bad.nonce = tc.nonce
		bad.Start()
		bad.Next([]byte(tc.serverFirst))
		if _, err := bad.Next([]byte("v=" + base64.StdEncoding.EncodeToString(make([]byte, 20)))); err == nil || bad.verified() {
			t.Errorf("%s: forged server signature accepted", tc.mech)
		}
	}
	c := newSCRAMClient(context.Background(), AuthSCRAMSHA256, sha256Hash, "a=b,c", "p")
	if _, first, _ := c.Start(); !strings.HasPrefix(string(first), "n,,n=a=3Db=2Cc,r=") {
		t.Errorf("user name not escaped: %q", first)
	}
	for _, serverFirst := range []string{"r=other,s=QSXCR+Q6sek8bf92,i=4096", "r=" + c.nonce + "x,s=,i=4096", "r=" + c.nonce + "x,s=QSXCR+Q6sek8bf92,i=0"} {
		c := newSCRAMClient(context.Background(), AuthSCRAMSHA256, sha256Hash, "u", "p")
		c.Start()
		if _, err := c.Next([]byte(strings.Replace(serverFirst, "r="+c.nonce, "r="+c.nonce, 1))); err == nil {
			t.Errorf("bad server-first %q accepted", serverFirst)
		}
	}
}

// fakeAuth plays a server for authenticate: each call of Auth runs the
// script with the client.
type fakeAuth struct {
	calls  int
	script func(call int, c sasl.Client) error
}

func (f *fakeAuth) Auth(c sasl.Client) error {
	f.calls++
	return f.script(f.calls, c)
}

func TestSCRAMWithoutServerProofFails(t *testing.T) {
	a := &authConfig{username: "u", password: "p"}
	f := &fakeAuth{script: func(_ int, c sasl.Client) error {
		_, _, _ = c.Start()
		return nil // 235 at once, never the server-final message
	}}
	if _, err := a.authenticate(context.Background(), f, []string{AuthSCRAMSHA256}, true); err == nil || !strings.Contains(err.Error(), "proving") {
		t.Errorf("err = %v", err)
	}
}

func TestMechanismSelection(t *testing.T) {
	all := []string{AuthPlain, AuthLogin, AuthCRAMMD5, AuthSCRAMSHA1, AuthSCRAMSHA256, AuthXOAUTH2}
	cases := []struct {
		name      string
		cfg       authConfig
		offered   []string
		encrypted bool
		want      string
		err       error
	}{
		{"strongest", authConfig{username: "u", password: "p"}, all, true, AuthSCRAMSHA256, nil},
		{"scram-1", authConfig{username: "u", password: "p"}, []string{AuthPlain, AuthSCRAMSHA1}, true, AuthSCRAMSHA1, nil},
		{"cram over clear text", authConfig{username: "u", password: "p"}, []string{AuthPlain, AuthCRAMMD5}, false, AuthCRAMMD5, nil},
		{"plain over clear text", authConfig{username: "u", password: "p"}, []string{AuthPlain, AuthLogin}, false, "", ErrInsecureAuth},
		{"plain allowed in clear", authConfig{username: "u", password: "p", allowInsecure: true}, []string{AuthPlain}, false, AuthPlain, nil},
		{"caller's order", authConfig{username: "u", password: "p", mechanisms: []string{AuthLogin, AuthPlain}}, all, true, AuthLogin, nil},
		{"caller restricts", authConfig{username: "u", password: "p", mechanisms: []string{AuthCRAMMD5}}, []string{AuthPlain}, true, "", ErrAuthUnavailable},
		{"password never as token", authConfig{username: "u", password: "p"}, []string{AuthXOAUTH2, AuthOAuthBearer}, true, "", ErrAuthUnavailable},
		{"token", authConfig{username: "u", tokens: TokenFunc(nil)}, all, true, AuthXOAUTH2, nil},
		{"token restricted", authConfig{username: "u", tokens: TokenFunc(nil), mechanisms: []string{AuthOAuthBearer}}, []string{AuthXOAUTH2, AuthOAuthBearer}, true, AuthOAuthBearer, nil},
		{"token in clear", authConfig{username: "u", tokens: TokenFunc(nil)}, all, false, "", ErrInsecureAuth},
		{"nothing offered", authConfig{username: "u", password: "p"}, nil, true, "", ErrAuthUnavailable},
	}
	for _, tc := range cases {
		order := passwordOrder
		if tc.cfg.tokens != nil {
			order = tokenOrder
		}
		got, err := tc.cfg.choose(order, tc.offered, tc.encrypted)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%s: %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
	if err := (&authConfig{mechanisms: []string{"NTLM"}}).validate(); err == nil || !strings.Contains(err.Error(), "SCRAM-SHA-256") {
		t.Errorf("unknown mechanism: %v", err)
	}
}

func TestLoginChallengeVariants(t *testing.T) {
	for _, challenges := range [][2]string{
		{"Username:", "Password:"}, {"User Name", "Password"}, {"username:", "password:"}, {"", ""}, {"Who are you?", "Prove it"},
	} {
		c := &loginClient{user: "u", pass: "p"}
		a, _ := c.Next([]byte(challenges[0]))
		b, _ := c.Next([]byte(challenges[1]))
		if string(a) != "u" || string(b) != "p" {
			t.Errorf("%q: answered %q, %q", challenges, a, b)
		}
	}
}

func TestAuthAgainstMailertest(t *testing.T) {
	const pass = "pa55-w0rd-for-test"
	srv := newTestServer(t, mailertest.WithImplicitTLS(), mailertest.WithUser("alice", pass), mailertest.WithRequireAuth())
	for _, mech := range []string{AuthPlain, AuthLogin, AuthCRAMMD5} {
		t.Run(mech, func(t *testing.T) {
			var transcript strings.Builder
			c := connect(t, srv, WithSecurity(SecurityTLS), WithCredentials("alice", pass), WithAuthMechanisms(mech),
				WithDebugWriter(&transcript, false))
			if _, err := sendRaw(t, c); err != nil {
				t.Fatal(err)
			}
			bad := connect(t, srv, WithSecurity(SecurityTLS), WithCredentials("alice", "wrong-"+pass), WithAuthMechanisms(mech),
				WithDebugWriter(&transcript, false))
			_, err := sendRaw(t, bad)
			var se *SMTPError
			if !errors.As(err, &se) || se.Code != 535 || se.Command != "AUTH "+mech {
				t.Fatalf("wrong password: %v", err)
			}
			assertNoSecret(t, err.Error()+transcript.String(), pass, "wrong-"+pass)
		})
	}
	// Automatic selection picks CRAM-MD5 of PLAIN, LOGIN, CRAM-MD5.
	var transcript strings.Builder
	c := connect(t, srv, WithSecurity(SecurityTLS), WithCredentials("alice", pass), WithDebugWriter(&transcript, false))
	if err := c.Connect(testCtx(t)); err != nil || !strings.Contains(transcript.String(), "C: AUTH CRAM-MD5") {
		t.Errorf("auto: %v\n%s", err, transcript.String())
	}
}

func assertNoSecret(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte(s)), base64.StdEncoding.EncodeToString([]byte("\x00alice\x00" + s))} {
			if strings.Contains(text, form) {
				t.Errorf("secret %q appears:\n%s", form, text)
			}
		}
	}
}

func TestTokenRefreshAndRetry(t *testing.T) {
	for _, mech := range []string{AuthXOAUTH2, AuthOAuthBearer} {
		t.Run(mech, func(t *testing.T) {
			srv := newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithToken("bob@example.com", "fresh-token"))
			var calls atomic.Int32
			ts := TokenFunc(func(_ context.Context, refresh bool) (string, error) {
				calls.Add(1)
				if refresh {
					return "fresh-token", nil
				}
				return "expired-token", nil
			})
			var transcript strings.Builder
			c := connect(t, srv, WithCredentials("bob@example.com", ""), WithTokenSource(ts), WithAuthMechanisms(mech),
				WithDebugWriter(&transcript, false))
			if _, err := sendRaw(t, c); err != nil {
				t.Fatal(err)
			}
			if calls.Load() != 2 {
				t.Errorf("token fetched %d times, want 2", calls.Load())
			}
			msgs, _ := srv.WaitMessages(testCtx(t), 1)
			if msgs[0].AuthUser != "bob@example.com" {
				t.Errorf("AuthUser %q", msgs[0].AuthUser)
			}
			// A token that stays bad fails after one retry.
			calls.Store(0)
			never := TokenFunc(func(context.Context, bool) (string, error) { calls.Add(1); return "revoked-token", nil })
			bad := connect(t, srv, WithCredentials("bob@example.com", ""), WithTokenSource(never), WithAuthMechanisms(mech),
				WithDebugWriter(&transcript, false))
			_, err := sendRaw(t, bad)
			if err == nil || calls.Load() != 2 || !strings.Contains(err.Error(), "AUTH "+mech) {
				t.Fatalf("revoked: %v after %d tokens", err, calls.Load())
			}
			assertNoSecret(t, err.Error()+transcript.String(), "fresh-token", "expired-token", "revoked-token")
		})
	}
	srv := newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithToken("bob@example.com", "t"))
	failing := TokenFunc(func(context.Context, bool) (string, error) { return "", fmt.Errorf("identity provider down") })
	if err := connect(t, srv, WithTokenSource(failing)).Connect(testCtx(t)); err == nil || !strings.Contains(err.Error(), "identity provider down") {
		t.Errorf("token source failure: %v", err)
	}
}

func TestCustomSASL(t *testing.T) {
	srv := newTestServer(t, mailertest.WithSTARTTLS(), mailertest.WithUser("carol", "pw"))
	c := connect(t, srv, WithSASL(func() sasl.Client { return sasl.NewPlainClient("", "carol", "pw") }))
	if _, err := sendRaw(t, c); err != nil {
		t.Fatal(err)
	}
	anon := connect(t, srv, WithSASL(func() sasl.Client { return sasl.NewAnonymousClient("trace") }))
	if err := anon.Connect(testCtx(t)); !errors.Is(err, ErrAuthUnavailable) {
		t.Errorf("unoffered custom mechanism: %v", err)
	}
}

func TestInsecureAuthRefusedBeforeSending(t *testing.T) {
	srv := newTestServer(t, mailertest.WithUser("u", "p"), mailertest.WithAuthMechanisms(AuthPlain, AuthLogin))
	c := connect(t, srv, WithSecurity(SecurityNone), WithCredentials("u", "p"))
	if err := c.Connect(testCtx(t)); !errors.Is(err, ErrInsecureAuth) {
		t.Fatalf("err = %v", err)
	}
	for _, cmd := range srv.Commands() {
		if strings.HasPrefix(cmd, "AUTH") {
			t.Errorf("sent %q over clear text", cmd)
		}
	}
	ok := connect(t, srv, WithSecurity(SecurityNone), WithCredentials("u", "p"), WithInsecureAuth())
	if err := ok.Connect(testCtx(t)); err != nil {
		t.Errorf("WithInsecureAuth: %v", err)
	}
}

package mailertest

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func start(t *testing.T, opts ...Option) *Server {
	s := NewServer(opts...)
	t.Cleanup(func() { s.Close() })
	return s
}

// dial connects a go-smtp client the way the server's security needs.
func dial(t *testing.T, s *Server) *smtp.Client {
	t.Helper()
	var c *smtp.Client
	var err error
	tc := &tls.Config{RootCAs: s.CertPool(), ServerName: "localhost"}
	switch {
	case s.cfg.implicitTLS:
		c, err = smtp.DialTLS(s.Addr(), tc)
	case s.cfg.starttls:
		c, err = smtp.DialStartTLS(s.Addr(), tc)
	default:
		c, err = smtp.Dial(s.Addr())
	}
	if err != nil {
		t.Fatal(err)
	}
	c.CommandTimeout = 5 * time.Second
	c.SubmissionTimeout = 5 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

const body = "Subject: hi\r\n\r\nHello.\r\n.dot\r\n"

func TestRecordsMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		tls  bool
	}{
		{"plain", nil, false},
		{"starttls", []Option{WithSTARTTLS()}, true},
		{"implicit", []Option{WithImplicitTLS()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, append(tc.opts, WithSMTPUTF8())...)
			c := dial(t, s)
			if err := c.SendMail("a@example.test", []string{"b@example.test", "c@example.test"}, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			msgs, err := s.WaitMessages(ctx(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			m := msgs[0]
			if m.From != "a@example.test" || len(m.To) != 2 || string(m.Data) != body || m.TLS != tc.tls || m.Helo != "localhost" {
				t.Errorf("message = %+v", m)
			}
			cmds := strings.Join(s.Commands(), "|")
			if !strings.Contains(cmds, "MAIL FROM:<a@example.test>") || !strings.Contains(cmds, "RCPT TO:<c@example.test>") {
				t.Errorf("commands = %s", cmds)
			}
			if s.Connections() != 1 {
				t.Errorf("connections = %d", s.Connections())
			}
		})
	}
}

func TestSTARTTLSAdvertisedOnlyBeforeTLS(t *testing.T) {
	s := start(t, WithSTARTTLS(), WithUser("u", "p"))
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered before TLS")
	}
	tc := dial(t, s)
	if ok, _ := tc.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered after TLS")
	}
	if !tc.SupportsAuth("CRAM-MD5") {
		t.Error("AUTH not offered after TLS")
	}
}

// cramClient and xoauth2Client are minimal test clients for mechanisms
// go-sasl lacks.
type cramClient struct{ user, pass string }

func (c cramClient) Start() (string, []byte, error) { return "CRAM-MD5", nil, nil }
func (c cramClient) Next(ch []byte) ([]byte, error) {
	m := hmac.New(md5.New, []byte(c.pass))
	m.Write(ch)
	return []byte(c.user + " " + hex.EncodeToString(m.Sum(nil))), nil
}

type xoauth2Client struct{ user, token string }

func (c xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}
func (c xoauth2Client) Next([]byte) ([]byte, error) { return []byte{}, nil }

func TestAuth(t *testing.T) {
	s := start(t, WithImplicitTLS(), WithUser("alice", "s3cret"), WithToken("bob", "tok"), WithRequireAuth())
	cases := []struct {
		name   string
		client sasl.Client
		user   string
	}{
		{"plain", sasl.NewPlainClient("", "alice", "s3cret"), "alice"},
		{"plain-bad", sasl.NewPlainClient("", "alice", "nope"), ""},
		{"login", sasl.NewLoginClient("alice", "s3cret"), "alice"},
		{"login-bad", sasl.NewLoginClient("alice", "nope"), ""},
		{"cram", cramClient{"alice", "s3cret"}, "alice"},
		{"cram-bad", cramClient{"alice", "nope"}, ""},
		{"xoauth2", xoauth2Client{"bob", "tok"}, "bob"},
		{"xoauth2-bad", xoauth2Client{"bob", "expired"}, ""},
		{"oauthbearer", sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: "bob", Token: "tok"}), "bob"},
		{"oauthbearer-bad", sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: "bob", Token: "x"}), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s)
			err := c.Auth(tc.client)
			if tc.user == "" {
				// go-sasl's OAUTHBEARER client gives up on the error
				// challenge itself; the others get the server's 535.
				var se *smtp.SMTPError
				if err == nil || (!errors.As(err, &se) || se.Code != 535) && tc.name != "oauthbearer-bad" {
					t.Fatalf("bad credentials: err = %v, want 535", err)
				}
				if err := c.Mail("a@example.test", nil); err == nil || !strings.Contains(err.Error(), "530") {
					t.Errorf("MAIL without auth: %v, want 530", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			before := len(s.Messages())
			if err := c.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			msgs, _ := s.WaitMessages(ctx(t), before+1)
			if got := msgs[before].AuthUser; got != tc.user {
				t.Errorf("AuthUser = %q, want %q", got, tc.user)
			}
		})
	}
	if cmds := strings.Join(s.Commands(), "|"); strings.Contains(cmds, "s3cret") || strings.Contains(cmds, "AGFsaWNl") {
		t.Errorf("secrets recorded: %s", cmds)
	}
}

func TestRecipientRepliesAndSize(t *testing.T) {
	s := start(t, WithRecipientReply("Bad@example.test", 550, "5.1.1", "no such user"),
		WithRecipientReply("later@example.test", 451, "4.3.0", "try later"), WithMaxMessageSize(100))
	c := dial(t, s)
	if err := c.Mail("a@example.test", nil); err != nil {
		t.Fatal(err)
	}
	for addr, code := range map[string]int{"bad@example.test": 550, "later@example.test": 451} {
		var se *smtp.SMTPError
		if err := c.Rcpt(addr, nil); !errors.As(err, &se) || se.Code != code {
			t.Errorf("%s: %v, want %d", addr, err, code)
		}
	}
	if size, ok := c.MaxMessageSize(); !ok || size != 100 {
		t.Errorf("SIZE = %d %v", size, ok)
	}
	c.Reset()
	err := c.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader(strings.Repeat("x", 500)))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 {
		t.Errorf("big message: %v, want 552", err)
	}
}

// cappedConn keeps every deadline go-smtp sets before a fixed limit, so a
// stalled conversation ends quickly.
type cappedConn struct {
	net.Conn
	limit time.Time
}

func (c cappedConn) SetDeadline(d time.Time) error {
	if d.IsZero() || d.After(c.limit) {
		d = c.limit
	}
	return c.Conn.SetDeadline(d)
}

// converse runs a whole conversation and returns the first error.
func converse(t *testing.T, s *Server) error {
	tc := &tls.Config{RootCAs: s.CertPool(), ServerName: "localhost"}
	var conn net.Conn
	var err error
	if s.cfg.implicitTLS {
		conn, err = tls.Dial("tcp", s.Addr(), tc)
	} else {
		conn, err = net.Dial("tcp", s.Addr())
	}
	if err != nil {
		return err
	}
	capped := cappedConn{conn, time.Now().Add(time.Second)}
	var c *smtp.Client
	if s.cfg.starttls {
		c, err = smtp.NewClientStartTLS(capped, tc)
		if err != nil {
			conn.Close()
			return err
		}
	} else {
		c = smtp.NewClient(capped)
		if err := c.Hello("client"); err != nil {
			c.Close()
			return err
		}
	}
	defer c.Close()
	if len(s.cfg.users) > 0 {
		if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
			return err
		}
	}
	steps := []func() error{
		c.Noop,
		func() error { return c.Verify("x@example.test") },
		func() error { return c.Mail("a@example.test", nil) },
		func() error { return c.Rcpt("b@example.test", nil) },
		func() error {
			w, err := c.Data()
			if err != nil {
				return err
			}
			w.Write([]byte(body))
			return w.Close()
		},
		c.Reset,
		c.Quit,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code == 252 {
				continue
			}
			return err
		}
	}
	return nil
}

func TestFaults(t *testing.T) {
	commands := []string{"GREETING", "EHLO", "STARTTLS", "AUTH", "NOOP", "VRFY", "MAIL", "RCPT", "DATA", "DOT", "RSET", "QUIT"}
	security := map[string][]Option{
		"starttls": {WithSTARTTLS(), WithUser("u", "p")},
		"implicit": {WithImplicitTLS(), WithUser("u", "p")},
	}
	for secName, secOpts := range security {
		for _, cmd := range commands {
			if cmd == "STARTTLS" && secName == "implicit" {
				continue
			}
			for _, action := range []Action{Stall, Drop, Reply421} {
				name := fmt.Sprintf("%s/%s/%d", secName, cmd, action)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					s := start(t, append(secOpts, WithFault(Fault{Command: cmd, Action: action}))...)
					start := time.Now()
					err := converse(t, s)
					if err == nil {
						t.Fatal("conversation succeeded despite the fault")
					}
					var se *smtp.SMTPError
					is421 := errors.As(err, &se) && se.Code == 421
					if action == Reply421 && !is421 && cmd != "GREETING" && cmd != "STARTTLS" {
						t.Errorf("err = %v, want 421", err)
					}
					if action == Stall && time.Since(start) > 10*time.Second {
						t.Errorf("stall not bounded by the client's timeout")
					}
					if cmd == "DOT" && len(s.Messages()) != 0 {
						t.Error("message recorded despite a fault before its reply")
					}
				})
			}
		}
	}
}

func TestFaultTargetsConnectionAndOccurrence(t *testing.T) {
	s := start(t, WithFault(Fault{Command: "MAIL", Action: Drop, Conn: 1, Nth: 2}))
	c := dial(t, s)
	if err := c.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader(body)); err != nil {
		t.Fatalf("first MAIL: %v", err)
	}
	if err := c.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader(body)); err == nil {
		t.Fatal("second MAIL on connection 1 not dropped")
	}
	c2 := dial(t, s)
	for i := 0; i < 2; i++ {
		if err := c2.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader(body)); err != nil {
			t.Fatalf("connection 2: %v", err)
		}
	}
}

func TestStallEndsOnClose(t *testing.T) {
	before := runtime.NumGoroutine()
	s := NewServer(WithFault(Fault{Command: "GREETING", Action: Stall}))
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := conn.Read(make([]byte, 10)); n != 0 {
		t.Fatal("greeting sent despite the stall")
	}
	s.Close()
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+1 {
		t.Errorf("%d goroutines left, %d before", n, before)
	}
}

func TestWaitMessagesHonoursContext(t *testing.T) {
	s := start(t)
	c, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.WaitMessages(c, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
}

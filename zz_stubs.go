package mailer

// Temporary stand-ins for the helpers' files; removed at merge.

import (
	"context"
	"io"
	"strings"

	"github.com/emersion/go-sasl"
	"golang.org/x/net/proxy"
)

type Envelope struct {
	From string
	To   []string
}

type Message struct {
	From, To string
	Subject  string
	Text     string
}

func (m *Message) Validate() error { return nil }

type prepared struct {
	envelope  Envelope
	utf8      bool
	messageID string
	body      string
}

func (m *Message) prepare(bool) (*prepared, error) {
	return &prepared{envelope: Envelope{From: m.From, To: []string{m.To}}, messageID: "stub@x",
		body: "Subject: " + m.Subject + "\r\n\r\n" + m.Text + "\r\n"}, nil
}

func (p *prepared) writeTo(w io.Writer) (int64, error) {
	n, err := io.Copy(w, strings.NewReader(p.body))
	return n, err
}

type TokenSource interface{ Token() (string, error) }

type authConfig struct {
	username, password string
	mechanisms         []string
	tokens             TokenSource
	custom             func() sasl.Client
	allowInsecure      bool
}

func (a *authConfig) enabled() bool { return a.username != "" }

const AuthPlain = "PLAIN"

func (a *authConfig) validate() error { return nil }

type authClient interface{ Auth(sasl.Client) error }

func (a *authConfig) authenticate(ctx context.Context, c authClient, offered []string, encrypted bool) (string, error) {
	return "PLAIN", c.Auth(sasl.NewPlainClient("", a.username, a.password))
}

type Proxy struct{}

func (p *Proxy) dialer(forward proxy.ContextDialer) proxy.ContextDialer { return forward }
func proxyFromEnvironment(string) (*Proxy, error)                       { return nil, nil }

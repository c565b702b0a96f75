package mailer

// Temporary stand-ins for the helpers' files; removed at merge.

import (
	"context"

	"github.com/emersion/go-sasl"
	"golang.org/x/net/proxy"
)

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

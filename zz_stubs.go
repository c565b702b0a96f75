package mailer

// Temporary stand-ins for the helpers' files; removed at merge.

import (

	"golang.org/x/net/proxy"
)

type Proxy struct{}

func (p *Proxy) dialer(forward proxy.ContextDialer) proxy.ContextDialer { return forward }
func proxyFromEnvironment(string) (*Proxy, error)                       { return nil, nil }

package mailer

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/gomailer/mailer/internal/testenv"
)

// TestRealProxiesToPostfix sends through dante (SOCKS5 with a password,
// SOCKS4), microsocks (SOCKS5), a SOCKS4a server and tinyproxy (HTTP
// CONNECT with and without Basic auth) to Postfix in every security mode,
// the certificate checked against Postfix's address, not the proxy's.
func TestRealProxiesToPostfix(t *testing.T) {
	pf := testenv.Postfix(t)
	px := testenv.Proxies(t)
	proxies := map[string]*Proxy{
		"dante-socks5": SOCKS5(px.SOCKS5, px.SOCKS5User, px.SOCKS5Pass),
		"dante-socks4": SOCKS4(px.SOCKS4, "mailer"),
		"socks4a":      SOCKS4A(px.SOCKS4A, "mailer"),
		"microsocks":   SOCKS5(px.Microsocks, px.MicrosocksUser, px.MicrosocksPass),
		"tinyproxy":    HTTPProxy(px.HTTP, px.HTTPUser, px.HTTPPass),
		"tinyproxy-na": HTTPProxy(px.HTTPNoAuth, "", ""),
	}
	tlsCfg := &tls.Config{RootCAs: pf.CAPool}
	modes := []struct {
		name string
		addr string
		opts []Option
	}{
		{"plain", pf.Plain, []Option{WithSecurity(SecurityNone)}},
		{"starttls", pf.Submission, []Option{WithSecurity(SecuritySTARTTLS), WithTLSConfig(tlsCfg), WithCredentials(pf.User, pf.Password)}},
		{"implicit", pf.SMTPS, []Option{WithSecurity(SecurityTLS), WithTLSConfig(tlsCfg), WithCredentials(pf.User, pf.Password)}},
	}
	for name, p := range proxies {
		for _, mode := range modes {
			t.Run(name+"/"+mode.name, func(t *testing.T) {
				c, err := NewConnection(mode.addr, append(mode.opts, WithProxy(p))...)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				msg, id := rawMessage("via " + name + " " + mode.name)
				if _, err := c.SendRaw(testCtx(t), Envelope{From: "sender@example.test", To: []string{"someone@example.test"}}, strings.NewReader(msg)); err != nil {
					t.Fatal(err)
				}
				delivered(t, pf, msg, id)
			})
		}
	}
	wrong := map[string]*Proxy{
		"dante-socks5": SOCKS5(px.SOCKS5, px.SOCKS5User, "not-"+px.SOCKS5Pass),
		"microsocks":   SOCKS5(px.Microsocks, px.MicrosocksUser, "not-"+px.MicrosocksPass),
		"tinyproxy":    HTTPProxy(px.HTTP, px.HTTPUser, "not-"+px.HTTPPass),
	}
	for name, p := range wrong {
		c, _ := NewConnection(pf.Plain, WithSecurity(SecurityNone), WithProxy(p))
		err := c.Connect(testCtx(t))
		c.Close()
		if !errors.Is(err, ErrProxyAuth) {
			t.Errorf("%s with a wrong password: %v, want ErrProxyAuth", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "not-") {
			t.Errorf("%s: password in %q", name, err)
		}
	}
}

package mailer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

// fakeProxy is an in-process SOCKS4/4a/5 or HTTP CONNECT proxy for tests.
// reply is the code it answers with (0 for success), user/pass the
// credentials it wants.
type fakeProxy struct {
	kind       string // socks4, socks5, http
	user, pass string
	reply      int
	onePacket  bool // http: send the 200 and the server's greeting in one write
	silent     bool // accept and say nothing
	ln         net.Listener
	mu         sync.Mutex
	dests      []string // destinations asked for
}

func startFakeProxy(t *testing.T, p *fakeProxy) *fakeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if p.silent {
					io.Copy(io.Discard, c)
					return
				}
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return p
}

func (p *fakeProxy) addr() string { return p.ln.Addr().String() }

func (p *fakeProxy) record(dest string) {
	p.mu.Lock()
	p.dests = append(p.dests, dest)
	p.mu.Unlock()
}

func (p *fakeProxy) asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.dests...)
}

func (p *fakeProxy) serve(c net.Conn) {
	br := bufio.NewReader(c)
	var dest string
	switch p.kind {
	case "socks5":
		var hdr [2]byte
		io.ReadFull(br, hdr[:])
		methods := make([]byte, hdr[1])
		io.ReadFull(br, methods)
		if p.user != "" {
			c.Write([]byte{5, 2})
			var v [2]byte
			io.ReadFull(br, v[:])
			u := make([]byte, v[1])
			io.ReadFull(br, u)
			var pl [1]byte
			io.ReadFull(br, pl[:])
			pw := make([]byte, pl[0])
			io.ReadFull(br, pw)
			if string(u) != p.user || string(pw) != p.pass {
				c.Write([]byte{1, 1})
				return
			}
			c.Write([]byte{1, 0})
		} else {
			c.Write([]byte{5, 0})
		}
		var req [4]byte
		io.ReadFull(br, req[:])
		switch req[3] {
		case 1:
			ip := make([]byte, 4)
			io.ReadFull(br, ip)
			dest = net.IP(ip).String()
		case 3:
			var l [1]byte
			io.ReadFull(br, l[:])
			h := make([]byte, l[0])
			io.ReadFull(br, h)
			dest = string(h)
		}
		var port [2]byte
		io.ReadFull(br, port[:])
		dest = net.JoinHostPort(dest, strconv.Itoa(int(binary.BigEndian.Uint16(port[:]))))
		p.record(dest)
		c.Write([]byte{5, byte(p.reply), 0, 1, 0, 0, 0, 0, 0, 0})
		if p.reply != 0 {
			return
		}
	case "socks4":
		var req [8]byte
		io.ReadFull(br, req[:])
		user, _ := br.ReadString(0)
		host := net.IP(req[4:8]).String()
		if req[4] == 0 && req[5] == 0 && req[6] == 0 && req[7] != 0 {
			host, _ = br.ReadString(0)
			host = strings.TrimSuffix(host, "\x00")
		}
		dest = net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(req[2:4]))))
		p.record(dest)
		code := byte(90)
		if p.reply != 0 {
			code = byte(p.reply)
		} else if strings.TrimSuffix(user, "\x00") != p.user {
			code = 93
		}
		c.Write([]byte{0, code, 0, 0, 0, 0, 0, 0})
		if code != 90 {
			return
		}
	case "http":
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		dest = req.Host
		p.record(dest)
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
		switch {
		case p.user != "" && req.Header.Get("Proxy-Authorization") != want:
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
			return
		case p.reply != 0:
			io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(p.reply)+" "+http.StatusText(p.reply)+"\r\nContent-Length: 0\r\n\r\n")
			return
		}
	}
	target, err := net.Dial("tcp", dest)
	if err != nil {
		return
	}
	defer target.Close()
	if p.kind == "http" {
		ok := "HTTP/1.1 200 Connection established\r\n\r\n"
		if p.onePacket {
			buf := make([]byte, 512)
			n, _ := target.Read(buf)
			c.Write(append([]byte(ok), buf[:n]...))
		} else {
			io.WriteString(c, ok)
		}
	}
	go func() { io.Copy(target, br); target.Close() }()
	io.Copy(c, target)
}

func TestProxiesDeliver(t *testing.T) {
	srvs := map[string]*mailertest.Server{
		"plain":    newTestServer(t),
		"starttls": newTestServer(t, mailertest.WithSTARTTLS()),
		"implicit": newTestServer(t, mailertest.WithImplicitTLS()),
	}
	modes := map[string]Security{"plain": SecurityNone, "starttls": SecuritySTARTTLS, "implicit": SecurityTLS}
	proxies := map[string]func() *Proxy{
		"socks5": func() *Proxy {
			return SOCKS5(startFakeProxy(t, &fakeProxy{kind: "socks5", user: "u", pass: "p"}).addr(), "u", "p")
		},
		"socks5-na": func() *Proxy { return SOCKS5(startFakeProxy(t, &fakeProxy{kind: "socks5"}).addr(), "", "") },
		"socks4":    func() *Proxy { return SOCKS4(startFakeProxy(t, &fakeProxy{kind: "socks4", user: "id"}).addr(), "id") },
		"socks4a":   func() *Proxy { return SOCKS4A(startFakeProxy(t, &fakeProxy{kind: "socks4", user: "id"}).addr(), "id") },
		"http": func() *Proxy {
			return HTTPProxy(startFakeProxy(t, &fakeProxy{kind: "http", user: "u", pass: "p"}).addr(), "u", "p")
		},
		"http-1pkt": func() *Proxy {
			return HTTPProxy(startFakeProxy(t, &fakeProxy{kind: "http", onePacket: true}).addr(), "", "")
		},
	}
	for pname, mk := range proxies {
		for mode, srv := range srvs {
			if pname == "http-1pkt" && mode == "implicit" {
				continue // an implicit-TLS server sends no greeting before the client's hello
			}
			t.Run(pname+"/"+mode, func(t *testing.T) {
				// "localhost": the proxy resolves it (SOCKS4 locally), and
				// the certificate is checked against it.
				c := connect(t, srv, WithSecurity(modes[mode]), WithProxy(mk()))
				if _, err := sendRaw(t, c); err != nil {
					t.Fatal(err)
				}
				if msgs, _ := srv.WaitMessages(testCtx(t), 1); len(msgs) == 0 {
					t.Fatal("nothing arrived")
				}
			})
		}
	}
}

func TestProxyNameResolution(t *testing.T) {
	srv := newTestServer(t)
	for _, tc := range []struct {
		p    *fakeProxy
		mk   func(addr string) *Proxy
		want string
	}{
		{&fakeProxy{kind: "socks5"}, func(a string) *Proxy { return SOCKS5(a, "", "") }, "localhost"},
		{&fakeProxy{kind: "socks4"}, func(a string) *Proxy { return SOCKS4A(a, "") }, "localhost"},
		{&fakeProxy{kind: "socks4"}, func(a string) *Proxy { return SOCKS4(a, "") }, "127.0.0.1"},
	} {
		fp := startFakeProxy(t, tc.p)
		c := connect(t, srv, WithSecurity(SecurityNone), WithProxy(tc.mk(fp.addr())))
		if err := c.Connect(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if host, _, _ := net.SplitHostPort(fp.asked()[0]); host != tc.want {
			t.Errorf("%s asked for %s, want %s", tc.mk(fp.addr()), fp.asked()[0], tc.want)
		}
	}
	u, _ := ProxyFromURL("socks5://" + startFakeProxy(t, &fakeProxy{kind: "socks5"}).addr())
	if host, _, _ := net.SplitHostPort(u.addr); host == "" {
		t.Fatal("no host")
	}
}

func TestProxyFailures(t *testing.T) {
	srv := newTestServer(t)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	cases := []struct {
		name string
		p    func() *Proxy
		want error
		code int
	}{
		{"socks5 bad password", func() *Proxy {
			return SOCKS5(startFakeProxy(t, &fakeProxy{kind: "socks5", user: "u", pass: "right"}).addr(), "u", "wrong-secret")
		}, ErrProxyAuth, 0},
		{"socks5 ruleset", func() *Proxy { return SOCKS5(startFakeProxy(t, &fakeProxy{kind: "socks5", reply: 2}).addr(), "", "") }, ErrProxyRefused, 2},
		{"socks5 host unreachable", func() *Proxy { return SOCKS5(startFakeProxy(t, &fakeProxy{kind: "socks5", reply: 4}).addr(), "", "") }, ErrDestinationUnreachable, 4},
		{"socks5 refused", func() *Proxy { return SOCKS5(startFakeProxy(t, &fakeProxy{kind: "socks5", reply: 5}).addr(), "", "") }, ErrDestinationUnreachable, 5},
		{"socks4 rejected", func() *Proxy { return SOCKS4(startFakeProxy(t, &fakeProxy{kind: "socks4", reply: 91}).addr(), "") }, ErrProxyRefused, 91},
		{"socks4 identd", func() *Proxy {
			return SOCKS4A(startFakeProxy(t, &fakeProxy{kind: "socks4", user: "x"}).addr(), "wrong-id")
		}, ErrProxyAuth, 93},
		{"http bad password", func() *Proxy {
			return HTTPProxy(startFakeProxy(t, &fakeProxy{kind: "http", user: "u", pass: "right"}).addr(), "u", "wrong-secret")
		}, ErrProxyAuth, 407},
		{"http forbidden", func() *Proxy {
			return HTTPProxy(startFakeProxy(t, &fakeProxy{kind: "http", reply: 403}).addr(), "", "")
		}, ErrProxyRefused, 403},
		{"http bad gateway", func() *Proxy {
			return HTTPProxy(startFakeProxy(t, &fakeProxy{kind: "http", reply: 502}).addr(), "", "")
		}, ErrDestinationUnreachable, 502},
		{"unreachable", func() *Proxy { return SOCKS5(closedAddr, "u", "wrong-secret") }, ErrProxyUnreachable, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, srv, WithSecurity(SecurityNone), WithProxy(tc.p()))
			err := c.Connect(testCtx(t))
			var pe *ProxyError
			if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("err = %v, want %v with code %d", err, tc.want, tc.code)
			}
			if strings.Contains(err.Error(), "wrong-secret") {
				t.Errorf("password in %q", err)
			}
		})
	}
	if _, err := SOCKS4("127.0.0.1:1", "").handshake(context.Background(), nil, "[::1]:25"); err == nil || !strings.Contains(err.Error(), "IPv6") {
		t.Errorf("SOCKS4 to IPv6: %v", err)
	}
}

// A context that ends as the handshake completes must not yield a
// connection with a past deadline.
func TestHandshakeRacingContext(t *testing.T) {
	fp := startFakeProxy(t, &fakeProxy{kind: "http"})
	srv := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := net.Dial("tcp", fp.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := HTTPProxy(fp.addr(), "", "")
	// Cancel from inside the handshake's last step: wrap the conn so the
	// first read (the proxy's reply) cancels the context.
	out, err := p.handshake(ctx, &cancelOnRead{Conn: conn, cancel: cancel}, net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port())))
	if err == nil {
		out.Close()
		t.Fatal("handshake succeeded with its context cancelled")
	}
	if !errors.Is(err, ErrProxyUnreachable) || !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

type cancelOnRead struct {
	net.Conn
	cancel func()
}

func (c *cancelOnRead) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.cancel()
	return n, err
}

func TestSilentProxyTimesOut(t *testing.T) {
	srv := newTestServer(t)
	for _, mk := range []func(string) *Proxy{
		func(a string) *Proxy { return SOCKS5(a, "u", "p") },
		func(a string) *Proxy { return SOCKS4A(a, "") },
		func(a string) *Proxy { return HTTPProxy(a, "", "") },
	} {
		fp := startFakeProxy(t, &fakeProxy{silent: true})
		c := connect(t, srv, WithSecurity(SecurityNone), WithProxy(mk(fp.addr())), WithConnectTimeout(300*time.Millisecond))
		start := time.Now()
		err := c.Connect(testCtx(t))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want a deadline", mk(fp.addr()), err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
	}
}

func TestProxyFromURL(t *testing.T) {
	cases := map[string]string{
		"socks5://u:p@proxy.example:1080": "socks5://u:***@proxy.example:1080",
		"socks5h://proxy.example":         "socks5h://proxy.example:1080",
		"socks4://id@10.0.0.1:1081":       "socks4://id@10.0.0.1:1081",
		"socks4a://10.0.0.1":              "socks4a://10.0.0.1:1080",
		"http://u:p%40ss@[::1]:3128":      "http://u:***@[::1]:3128",
		"https://proxy.example":           "https://proxy.example:443",
		"HTTP://proxy.example":            "http://proxy.example:8080",
	}
	for in, want := range cases {
		p, err := ProxyFromURL(in)
		if err != nil || p.String() != want {
			t.Errorf("ProxyFromURL(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	if p, _ := ProxyFromURL("http://u:p%40ss@[::1]:3128"); p.pass != "p@ss" {
		t.Errorf("password %q", p.pass)
	}
	for _, bad := range []string{"ftp://x:1", "socks5://user:hunter2@", "://user:hunter2@x", "x",
		"socks5://user:hunter2@h:99999", "http://user:hunter2@h:8080/path", "http://h:8080?x=1", "socks5://h:0"} {
		_, err := ProxyFromURL(bad)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ProxyFromURL(%q) = %v", bad, err)
		}
	}
	if s := SOCKS5("h:1", "u", "secret").String(); s != "socks5h://u:***@h:1" {
		t.Errorf("String = %s", s)
	}
}

func TestProxyFromEnvironment(t *testing.T) {
	srv := newTestServer(t)
	fp := startFakeProxy(t, &fakeProxy{kind: "socks5"})
	t.Setenv("ALL_PROXY", "socks5h://"+fp.addr())
	t.Setenv("NO_PROXY", "")
	c := connect(t, srv, WithSecurity(SecurityNone), WithProxyFromEnvironment())
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(fp.asked()) != 1 {
		t.Fatalf("proxy saw %v", fp.asked())
	}
	t.Setenv("NO_PROXY", "example.org,localhost")
	c2 := connect(t, srv, WithSecurity(SecurityNone), WithProxyFromEnvironment())
	if err := c2.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(fp.asked()) != 1 {
		t.Errorf("NO_PROXY ignored: proxy saw %v", fp.asked())
	}
	t.Setenv("ALL_PROXY", "gopher://x")
	if err := connect(t, srv, WithProxyFromEnvironment()).Connect(testCtx(t)); err == nil {
		t.Error("bad ALL_PROXY accepted")
	}
}

func TestHTTPSProxy(t *testing.T) {
	srv := newTestServer(t)
	// net/http as an HTTPS proxy: CONNECT, then relay.
	var asked []string
	hp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.Host)
		target, err := net.Dial("tcp", r.Host)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		c, brw, _ := http.NewResponseController(w).Hijack()
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
		go func() { io.Copy(target, brw); target.Close() }()
		io.Copy(c, target)
	}))
	defer hp.Close()
	pool := x509.NewCertPool()
	pool.AddCert(hp.Certificate())
	addr := strings.TrimPrefix(hp.URL, "https://")
	c := connect(t, srv, WithSecurity(SecurityNone), WithProxy(HTTPSProxy(addr, "", "", &tls.Config{RootCAs: pool})))
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 {
		t.Errorf("proxy asked for %v", asked)
	}
	untrusted := connect(t, srv, WithSecurity(SecurityNone), WithProxy(HTTPSProxy(addr, "", "", nil)))
	if err := untrusted.Connect(testCtx(t)); !errors.Is(err, ErrProxyUnreachable) {
		t.Errorf("untrusted proxy certificate: %v", err)
	}
}

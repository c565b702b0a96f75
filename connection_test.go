package mailer

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestConcurrentSendsShareSessions(t *testing.T) {
	for _, max := range []int{1, 3} {
		t.Run(fmt.Sprint("max", max), func(t *testing.T) {
			var open, peak atomic.Int32
			srv := newScriptServer(t, func(c *scriptConn) {
				n := open.Add(1)
				defer open.Add(-1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				c.serve(nil, nil)
			})
			c := plain(t, srv.addr(), WithMaxConnections(max))
			var wg sync.WaitGroup
			errs := make(chan error, 20)
			for i := 0; i < 20; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					env := Envelope{From: "a@example.test", To: []string{fmt.Sprintf("r%d@example.test", i)}}
					_, err := c.SendRaw(testCtx(t), env, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
					errs <- err
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if n := srv.connections(); n < 1 || n > max {
				t.Errorf("%d connections, want 1..%d", n, max)
			}
			if p := int(peak.Load()); p > max {
				t.Errorf("%d sessions at once, want at most %d", p, max)
			}
			datas := 0
			for _, l := range srv.received() {
				if l == "DATA" {
					datas++
				}
			}
			if datas != 20 {
				t.Errorf("%d DATA commands, want 20", datas)
			}
		})
	}
}

func TestTranscriptNeverShowsSecrets(t *testing.T) {
	const user, pass = "alice@example.test", "correct horse battery staple"
	authed := false
	srv := newScriptServer(t, func(c *scriptConn) {
		c.serve([]string{"AUTH PLAIN LOGIN"}, smtpHooks{"AUTH": func(c *scriptConn, l string) bool {
			authed = strings.HasPrefix(l, "AUTH PLAIN ")
			c.send("235 2.7.0 Authentication successful")
			return true
		}})
	})
	var plainOut, logOut bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := plain(t, srv.addr(), WithCredentials(user, pass), WithInsecureAuth(), WithAuthMechanisms(AuthPlain),
		WithDebugWriter(&plainOut, true), WithLogger(logger))
	if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if !authed {
		t.Fatal("the client did not authenticate with PLAIN")
	}
	secrets := []string{pass, base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass)),
		base64.StdEncoding.EncodeToString([]byte(pass))}
	for name, out := range map[string]string{"debug writer": plainOut.String(), "slog": logOut.String()} {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s shows %q:\n%s", name, s, out)
			}
		}
		if !strings.Contains(out, "AUTH PLAIN [redacted]") || !strings.Contains(out, "MAIL FROM:<from@example.test>") {
			t.Errorf("%s lacks the expected lines:\n%s", name, out)
		}
	}
	if !strings.Contains(logOut.String(), `msg="smtp session open"`) || !strings.Contains(logOut.String(), "level=INFO") {
		t.Errorf("no session event at Info:\n%s", logOut.String())
	}
}

func TestSourceAddressAndDialer(t *testing.T) {
	remote := make(chan string, 1)
	srv := newScriptServer(t, func(c *scriptConn) {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		remote <- host
		c.serve(nil, nil)
	})
	c := plain(t, srv.addr(), WithSourceAddress("127.0.0.2"))
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := <-remote; got != "127.0.0.2" {
		t.Errorf("server saw %s, want 127.0.0.2", got)
	}
	var dialled atomic.Int32
	d := dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialled.Add(1)
		var nd net.Dialer
		return nd.DialContext(ctx, network, addr)
	})
	c2 := plain(t, srv.addr(), WithDialer(d))
	if err := c2.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	<-remote
	if dialled.Load() != 1 {
		t.Errorf("custom dialer used %d times", dialled.Load())
	}
}

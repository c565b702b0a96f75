// Command proxy sends a message through a proxy given as a URL. Without
// flags it starts an in-process SMTP server and a minimal in-process HTTP
// CONNECT proxy, so it runs anywhere.
//
//	go run ./examples/proxy
//	go run ./examples/proxy -proxy socks5h://user:pass@127.0.0.1:1080 -server smtp.example.com:587
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

func main() {
	proxyURL := flag.String("proxy", "", "proxy URL: socks4://, socks4a://, socks5://, socks5h://, http://, https://")
	server := flag.String("server", "", "SMTP server host:port")
	flag.Parse()

	var opts []mailer.Option
	if *server == "" {
		srv := mailertest.NewServer(mailertest.WithSTARTTLS())
		defer srv.Close()
		*server = fmt.Sprintf("localhost:%d", srv.Port())
		opts = append(opts, mailer.WithTLSConfig(&tls.Config{RootCAs: srv.CertPool()}))
		if *proxyURL == "" {
			*proxyURL = "http://" + startConnectProxy()
		}
	}
	p, err := mailer.ProxyFromURL(*proxyURL)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("through", p) // the password is shown as ***
	c, err := mailer.NewConnection(*server, append(opts, mailer.WithProxy(p), mailer.WithConnectTimeout(10*time.Second))...)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Send(ctx, &mailer.Message{
		From:    mailer.Recipient{Address: "sender@example.com"},
		To:      []mailer.Recipient{{Address: "rcpt@example.com"}},
		Subject: "Through a proxy",
		Text:    "STARTTLS runs end to end; the proxy sees only ciphertext.",
	})
	if err != nil {
		log.Fatal(err) // a *mailer.ProxyError says which hop failed
	}
	st, _ := c.TLSConnectionState()
	fmt.Printf("sent %s over %s, certificate checked for %s\n", res.MessageID, tls.VersionName(st.Version), st.ServerName)
}

// startConnectProxy runs a bare HTTP CONNECT proxy on loopback and returns
// its address.
func startConnectProxy() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				target, err := net.Dial("tcp", req.Host)
				if err != nil {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				defer target.Close()
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go io.Copy(target, br)
				io.Copy(c, target)
			}()
		}
	}()
	return ln.Addr().String()
}

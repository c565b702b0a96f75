// Command dkim signs a message with an RSA and an Ed25519 DKIM key made on
// the spot, sends it through an in-process SMTP server that it starts
// itself, and verifies the copy the server received, looking the public
// keys up in a stand-in for DNS.
//
//	go run ./examples/dkim
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

func main() {
	// In a service the keys come from files: mailer.ParseDKIMKey reads
	// what openssl writes (see docs/dkim.md).
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	rsaSigner, err := mailer.ParseDKIMKey(pemKey)
	if err != nil {
		log.Fatal(err)
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	// The TXT records that would be published in DNS.
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	dns := map[string]string{
		"2026a._domainkey.example.com": "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(rsaPub),
		"2026e._domainkey.example.com": "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edPub),
	}

	srv := mailertest.NewServer()
	defer srv.Close()
	c, err := mailer.NewConnection(srv.Addr(),
		mailer.WithSecurity(mailer.SecurityNone), // the in-process server has no TLS
		mailer.WithDKIM(
			mailer.DKIM{Domain: "example.com", Selector: "2026a", Key: rsaSigner},
			mailer.DKIM{Domain: "example.com", Selector: "2026e", Key: edKey},
		),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Send(ctx, &mailer.Message{
		From:    mailer.Recipient{Name: "Shop", Address: "orders@example.com"},
		To:      []mailer.Recipient{{Address: "customer@example.net"}},
		Subject: "Your order has shipped",
		Text:    "It is on its way.",
		HTML:    "<p>It is on its way.</p>",
	}); err != nil {
		log.Fatal(err)
	}
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	verifications, err := dkim.VerifyWithOptions(bytes.NewReader(msgs[0].Data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return []string{dns[name]}, nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range verifications {
		result := "pass"
		if v.Err != nil {
			result = "FAIL: " + v.Err.Error()
		}
		fmt.Printf("DKIM signature by %s: %s\n", v.Domain, result)
	}
}

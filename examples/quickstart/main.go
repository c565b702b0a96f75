// Command quickstart sends one message through an in-process SMTP server
// that it starts itself (STARTTLS with a throw-away CA), then prints what
// the server received and the client's transcript, password redacted.
//
//	go run ./examples/quickstart
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

func main() {
	srv := mailertest.NewServer(mailertest.WithSTARTTLS(), mailertest.WithUser("demo", "demo-password"))
	defer srv.Close()

	var transcript bytes.Buffer
	c, err := mailer.NewConnection("localhost",
		mailer.WithPort(srv.Port()),
		mailer.WithSecurity(mailer.SecuritySTARTTLS),
		mailer.WithTLSConfig(&tls.Config{RootCAs: srv.CertPool()}),
		mailer.WithCredentials("demo", "demo-password"),
		mailer.WithDebugWriter(&transcript, false),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Send(ctx, &mailer.Message{
		From:    mailer.Recipient{Name: "Muflone", Address: "muflone@example.com"},
		To:      []mailer.Recipient{{Name: "Foo", Address: "foo@example.com"}},
		Cc:      []mailer.Recipient{{Address: "bar@example.com"}},
		Subject: "Test e-mail",
		Text:    "Hello world!",
		HTML:    "<h1>Hello world!</h1>",
	})
	if err != nil {
		log.Fatal(err)
	}
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	m := msgs[0]
	fmt.Printf("sent %s; the server answered %q\n\n", res.MessageID, res.Response)
	fmt.Printf("== the server received (TLS %v, user %q) from %s for %v:\n%s\n", m.TLS, m.AuthUser, m.From, m.To, m.Data)
	fmt.Printf("== transcript:\n%s", transcript.String())
}

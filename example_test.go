package mailer_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

func ExampleConnection_Send() {
	// A test server standing in for smtp.example.com.
	srv := mailertest.NewServer(mailertest.WithSTARTTLS(), mailertest.WithUser("user", "secret"))
	defer srv.Close()

	c, err := mailer.NewConnection("localhost",
		mailer.WithPort(srv.Port()),
		mailer.WithTLSConfig(&tls.Config{RootCAs: srv.CertPool()}), // trust the test CA
		mailer.WithCredentials("user", "secret"),
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
		Bcc:     []mailer.Recipient{{Address: "archive@example.com"}},
		Subject: "Test e-mail",
		Text:    "Hello world!",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("accepted:", res.Accepted)
	msgs, _ := srv.WaitMessages(ctx, 1)
	fmt.Println("encrypted:", msgs[0].TLS, "user:", msgs[0].AuthUser)
	// Output:
	// accepted: [foo@example.com archive@example.com]
	// encrypted: true user: user
}

func ExampleRecipientsError() {
	srv := mailertest.NewServer(mailertest.WithRecipientReply("nobody@example.com", 550, "5.1.1", "no such user"))
	defer srv.Close()
	c, _ := mailer.NewConnection(srv.Addr(), mailer.WithSecurity(mailer.SecurityNone))
	defer c.Close()

	_, err := c.Send(context.Background(), &mailer.Message{
		From: mailer.Recipient{Address: "app@example.com"},
		To:   []mailer.Recipient{{Address: "user@example.com"}, {Address: "nobody@example.com"}},
		Text: "Hello",
	})
	var re *mailer.RecipientsError
	if errors.As(err, &re) {
		for _, r := range re.Rejected {
			var se *mailer.SMTPError
			errors.As(r.Err, &se)
			fmt.Println(r.Address, se.Code, se.EnhancedCode, se.Temporary())
		}
	}
	fmt.Println("messages delivered:", len(srv.Messages()))
	// Output:
	// nobody@example.com 550 5.1.1 false
	// messages delivered: 0
}

func ExampleParseRecipient() {
	for _, s := range []string{`"Bar, Foo" <foo@example.com>`, "Muflone muflone@example.com", "=?utf-8?q?J=C3=BCrgen?= <j@example.com>"} {
		r, err := mailer.ParseRecipient(s)
		fmt.Printf("%q %q %v\n", r.Name, r.Address, err)
	}
	// Output:
	// "Bar, Foo" "foo@example.com" <nil>
	// "Muflone" "muflone@example.com" <nil>
	// "Jürgen" "j@example.com" <nil>
}

func ExampleWithEncryption() {
	// mumailer's connection.set_encryption("TLSv1_2", "ECDHE-RSA-AES128-GCM-SHA256")
	// on port 25 is STARTTLS with TLS 1.2 only and that cipher.
	_, err := mailer.NewConnection("smtp.example.com:25",
		mailer.WithEncryption("TLSv1_2", "ECDHE-RSA-AES128-GCM-SHA256"))
	fmt.Println(err)
	_, err = mailer.NewConnection("smtp.example.com", mailer.WithEncryption("TLS", "RC4-SHA"))
	fmt.Println(err)
	// Output:
	// <nil>
	// mailer: cipher suite RC4-SHA is insecure; use WithUnsafeEncryption to allow it
}

func ExampleWithRetry() {
	// A server that answers the first MAIL with 451, as a busy provider
	// would.
	srv := mailertest.NewServer(mailertest.WithFault(mailertest.Fault{
		Command: "MAIL", Nth: 1, Action: mailertest.Reply, Code: 451, Enhanced: "4.3.0", Text: "Try again later",
	}))
	defer srv.Close()

	c, err := mailer.NewConnection(srv.Addr(),
		mailer.WithSecurity(mailer.SecurityNone),
		mailer.WithRetry(mailer.RetryPolicy{Attempts: 3, Delay: 10 * time.Millisecond}),
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Shutdown lets sends in flight finish, then says QUIT.
	defer c.Shutdown(ctx)

	res, err := c.Send(ctx, &mailer.Message{
		From:    mailer.Recipient{Address: "app@example.com"},
		To:      []mailer.Recipient{{Address: "user@example.com"}},
		Subject: "Your receipt",
		Text:    "Thank you.",
	})
	if err != nil {
		// mailer.IsTemporary(err) says whether to try again later.
		log.Fatal(err)
	}
	fmt.Println("accepted:", res.Accepted, "attempts:", res.Attempts)
	fmt.Println("retries:", c.Stats().Retries)
	// Output:
	// accepted: [user@example.com] attempts: 2
	// retries: 1
}

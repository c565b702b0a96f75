// Command oauth2 authenticates with XOAUTH2 using a token source that
// refreshes a rejected token, the way Gmail and Microsoft 365 want it.
// Without flags it runs against an in-process server whose first token
// has "expired", and shows the refresh in the transcript.
//
//	go run ./examples/oauth2
//	go run ./examples/oauth2 -server smtp.gmail.com:587 -user me@gmail.com -token "$ACCESS_TOKEN"
//
// With golang.org/x/oauth2, wrap its TokenSource as the mailer.TokenSource
// documentation shows: a cached source normally, the base source when
// asked to refresh.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

func main() {
	server := flag.String("server", "", "SMTP server host:port (default: an in-process test server)")
	user := flag.String("user", "demo@example.com", "account")
	token := flag.String("token", "", "OAuth2 access token")
	to := flag.String("to", "", "recipient (default: the account)")
	flag.Parse()
	if *to == "" {
		*to = *user
	}

	opts := []mailer.Option{mailer.WithCredentials(*user, ""), mailer.WithDebugWriter(os.Stdout, false)}
	var srv *mailertest.Server
	ts := mailer.TokenFunc(func(ctx context.Context, refresh bool) (string, error) { return *token, nil })
	if *server == "" {
		srv = mailertest.NewServer(mailertest.WithSTARTTLS(), mailertest.WithToken(*user, "fresh-token"))
		defer srv.Close()
		*server = fmt.Sprintf("localhost:%d", srv.Port())
		opts = append(opts, mailer.WithTLSConfig(&tls.Config{RootCAs: srv.CertPool()}))
		// The first token is stale; the refreshed one works.
		ts = func(ctx context.Context, refresh bool) (string, error) {
			if refresh {
				fmt.Println("-- token rejected: fetching a fresh one")
				return "fresh-token", nil
			}
			return "stale-token", nil
		}
	}
	c, err := mailer.NewConnection(*server, append(opts, mailer.WithTokenSource(ts))...)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Send(ctx, &mailer.Message{
		From:    mailer.Recipient{Address: *user},
		To:      []mailer.Recipient{{Address: *to}},
		Subject: "Sent with XOAUTH2",
		Text:    "Hello from mailer.",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("-- sent", res.MessageID)
}

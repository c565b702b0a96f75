// Command oauth2 authenticates with XOAUTH2 using a golang.org/x/oauth2
// token source, refreshing a token the server rejects, the way Gmail and
// Microsoft 365 want it. Without flags it runs against an in-process
// server, with a token provider whose first token the server no longer
// accepts, and shows the refresh in the transcript.
//
//	go run ./examples/oauth2
//	go run ./examples/oauth2 -server smtp.gmail.com:587 -user me@gmail.com -token "$ACCESS_TOKEN"
//
// The mailer package does not import x/oauth2: this program adapts it.
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
	"golang.org/x/oauth2"
)

// tokenSource adapts an x/oauth2 token source: tokens come from the cache
// until the server rejects one, then from base.
func tokenSource(base oauth2.TokenSource) mailer.TokenSource {
	cached := oauth2.ReuseTokenSource(nil, base)
	return mailer.TokenFunc(func(ctx context.Context, refresh bool) (string, error) {
		src := cached
		if refresh {
			src = base
		}
		t, err := src.Token()
		if err != nil {
			return "", err
		}
		return t.AccessToken, nil
	})
}

// provider stands in for an identity provider: its first token has been
// revoked behind the client's back, the next ones are good.
type provider struct{ issued int }

func (p *provider) Token() (*oauth2.Token, error) {
	p.issued++
	tok := "fresh-token"
	if p.issued == 1 {
		tok = "revoked-token"
	}
	fmt.Printf("-- provider issues token #%d\n", p.issued)
	return &oauth2.Token{AccessToken: tok, Expiry: time.Now().Add(time.Hour)}, nil
}

func main() {
	server := flag.String("server", "", "SMTP server host:port (default: an in-process test server)")
	user := flag.String("user", "demo@example.com", "account")
	token := flag.String("token", "", "OAuth2 access token (with -server)")
	to := flag.String("to", "", "recipient (default: the account)")
	flag.Parse()
	if *to == "" {
		*to = *user
	}

	opts := []mailer.Option{mailer.WithCredentials(*user, ""), mailer.WithDebugWriter(os.Stdout, false)}
	var base oauth2.TokenSource = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: *token})
	if *server == "" {
		srv := mailertest.NewServer(mailertest.WithSTARTTLS(), mailertest.WithToken(*user, "fresh-token"))
		defer srv.Close()
		*server = fmt.Sprintf("localhost:%d", srv.Port())
		opts = append(opts, mailer.WithTLSConfig(&tls.Config{RootCAs: srv.CertPool()}))
		base = &provider{}
	}
	c, err := mailer.NewConnection(*server, append(opts, mailer.WithTokenSource(tokenSource(base)))...)
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

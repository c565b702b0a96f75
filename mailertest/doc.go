// Package mailertest provides an in-process SMTP server for tests, built on
// go-smtp's server: it listens on 127.0.0.1, can speak STARTTLS or implicit
// TLS with a certificate from a CA it generates in memory, can require
// authentication, records every message it receives, and can misbehave on
// purpose (no greeting, a stall, a dropped connection, a 421 or any reply
// at a chosen command, refused recipients, a per-connection message cap,
// an idle timeout, a rate limit) so that a client's error handling can be
// tested. docs/mailertest.md lists it all.
//
//	srv := mailertest.NewServer(mailertest.WithSTARTTLS(), mailertest.WithUser("u", "p"))
//	defer srv.Close()
//	// point the client at srv.Addr(), trusting srv.CertPool()
//	msgs, err := srv.WaitMessages(ctx, 1)
package mailertest

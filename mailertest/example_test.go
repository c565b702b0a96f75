package mailertest_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/gomailer/mailer/mailertest"
)

// A test starts a server, points the code under test at it, and checks
// what arrived.
func ExampleNewServer() {
	srv := mailertest.NewServer(
		mailertest.WithRecipientReply("nobody@example.test", 550, "5.1.1", "no such user"),
	)
	defer srv.Close()

	// The code under test; here go-smtp's client stands in for it.
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	err = c.SendMail("app@example.test", []string{"user@example.test"},
		strings.NewReader("Subject: Welcome\r\n\r\nHello!\r\n"))
	fmt.Println("send:", err)
	fmt.Println("refused:", c.SendMail("app@example.test", []string{"nobody@example.test"}, strings.NewReader("x\r\n")))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		panic(err)
	}
	fmt.Println(msgs[0].From, "->", msgs[0].To)
	fmt.Printf("%q\n", msgs[0].Data)
	// Output:
	// send: <nil>
	// refused: SMTP error 550: no such user
	// app@example.test -> [user@example.test]
	// "Subject: Welcome\r\n\r\nHello!\r\n"
}

// Faults make the server misbehave on purpose: here the first connection
// is dropped when the client sends MAIL for the second time.
func ExampleWithFault() {
	srv := mailertest.NewServer(mailertest.WithFault(mailertest.Fault{
		Command: "MAIL", Action: mailertest.Drop, Conn: 1, Nth: 2,
	}))
	defer srv.Close()
	c, _ := smtp.Dial(srv.Addr())
	defer c.Close()
	fmt.Println(c.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader("x\r\n")))
	fmt.Println(c.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader("x\r\n")) != nil)
	// Output:
	// <nil>
	// true
}

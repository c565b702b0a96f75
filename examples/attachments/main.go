// Command attachments builds a message with an HTML body, an inline image
// and attachments from a file, bytes and a reader, sends it to an
// in-process server, and prints the MIME structure the server received.
//
//	go run ./examples/attachments [file-to-attach]
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

func main() {
	srv := mailertest.NewServer()
	defer srv.Close()
	c, err := mailer.NewConnection(srv.Addr(), mailer.WithSecurity(mailer.SecurityNone))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	msg := &mailer.Message{
		From:    mailer.Recipient{Name: "Ünïcode Sender", Address: "sender@example.com"},
		To:      []mailer.Recipient{{Name: "Foo", Address: "foo@example.com"}},
		Subject: "Quarterly report — Q3",
		Text:    "The report is attached.",
		HTML:    `<p>The report is attached.</p><img src="cid:chart">`,
	}
	// A 1x1 GIF, shown inline by the HTML part.
	msg.AttachBytes("chart.gif", []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")).ContentID = "chart"
	msg.AttachReader("notes €.txt", strings.NewReader("numbers go up\n"))
	if len(os.Args) > 1 {
		if _, err := msg.AttachFile(os.Args[1]); err != nil {
			log.Fatal(err) // a missing file is an error here, not a silent drop
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Send(ctx, msg); err != nil {
		log.Fatal(err)
	}
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	r, err := mail.CreateReader(strings.NewReader(string(msgs[0].Data)))
	if err != nil {
		log.Fatal(err)
	}
	subject, _ := r.Header.Subject()
	fmt.Println("subject:", subject)
	for {
		p, err := r.NextPart()
		if err != nil {
			break
		}
		switch h := p.Header.(type) {
		case *mail.InlineHeader:
			ct, _, _ := h.ContentType()
			fmt.Println("inline part:", ct, h.Get("Content-Id"))
		case *mail.AttachmentHeader:
			name, _ := h.Filename()
			ct, _, _ := h.ContentType()
			fmt.Println("attachment:", name, ct)
		}
	}
}

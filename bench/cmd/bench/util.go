package main

import (
	"io"
	"log"
	"net"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-smtp"
)

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitListening polls addr until it accepts, for at most 10 seconds.
func waitListening(addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Fatalf("nothing listens on %s", addr)
}

// sendWithGoMessage is the baseline for the memory figure: go-message
// renders into a pipe that go-smtp streams to the server.
func sendWithGoMessage(addr string, attachment io.Reader) error {
	pr, pw := io.Pipe()
	go func() {
		var h mail.Header
		h.SetAddressList("From", []*mail.Address{{Address: from}})
		h.SetAddressList("To", []*mail.Address{{Address: to}})
		mw, err := mail.CreateWriter(pw, h)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		var ih mail.InlineHeader
		ih.SetContentType("text/plain", nil)
		w, _ := mw.CreateSingleInline(ih)
		io.WriteString(w, "big")
		w.Close()
		var ah mail.AttachmentHeader
		ah.SetFilename("big.bin")
		aw, _ := mw.CreateAttachment(ah)
		_, err = io.Copy(aw, attachment)
		aw.Close()
		mw.Close()
		pw.CloseWithError(err)
	}()
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.SendMail(from, []string{to}, pr)
}

// goMessageRender writes the render benchmark's message with go-message's
// mail writer directly: the baseline for the render figure.
type goMessageRender struct {
	text, html string
	att        []byte
}

func (g goMessageRender) WriteTo(w io.Writer) (int64, error) {
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Address: from}})
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetSubject("Report")
	mw, err := mail.CreateWriter(w, h)
	if err != nil {
		return 0, err
	}
	iw, err := mw.CreateInline()
	if err != nil {
		return 0, err
	}
	for _, p := range []struct{ ct, body string }{{"text/plain", g.text}, {"text/html", g.html}} {
		var ih mail.InlineHeader
		ih.SetContentType(p.ct, map[string]string{"charset": "utf-8"})
		ih.Set("Content-Transfer-Encoding", "quoted-printable")
		pw, err := iw.CreatePart(ih)
		if err != nil {
			return 0, err
		}
		io.WriteString(pw, p.body)
		pw.Close()
	}
	iw.Close()
	var ah mail.AttachmentHeader
	ah.SetFilename("small.pdf")
	ah.SetContentType("application/pdf", nil)
	aw, err := mw.CreateAttachment(ah)
	if err != nil {
		return 0, err
	}
	aw.Write(g.att)
	aw.Close()
	return 0, mw.Close()
}

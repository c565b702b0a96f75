package relay

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// A scripted exchange through the relay counts exactly its turns: the
// greeting, then EHLO, then two pipelined commands answered together, then
// QUIT: three client turns after the server spoke.
func TestTurnsCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		c.Write([]byte("220 hi\r\n"))
		br.ReadString('\n') // EHLO
		c.Write([]byte("250 ok\r\n"))
		br.ReadString('\n') // MAIL
		br.ReadString('\n') // RCPT
		c.Write([]byte("250 a\r\n250 b\r\n"))
		br.ReadString('\n') // QUIT
		c.Write([]byte("221 bye\r\n"))
	}()
	r, err := Start(ln.Addr().String(), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	start := time.Now()
	line := func() string { s, _ := br.ReadString('\n'); return s }
	line()
	c.Write([]byte("EHLO x\r\n"))
	line()
	c.Write([]byte("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"))
	line()
	line()
	c.Write([]byte("QUIT\r\n"))
	if got := line(); !strings.HasPrefix(got, "221") {
		t.Fatalf("got %q", got)
	}
	elapsed := time.Since(start)
	c.Close()
	r.Close()
	if n := r.Turns(); n != 3 {
		t.Errorf("turns = %d, want 3", n)
	}
	// Greeting half a trip, then three full round trips: at least 70 ms.
	if elapsed < 70*time.Millisecond {
		t.Errorf("exchange took %v, less than the injected latency", elapsed)
	}
}

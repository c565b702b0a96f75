package mailer

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gomailer/mailer/mailertest"
)

// BenchmarkSend measures one message on a reused session to the in-process
// server; the bench module compares it with other clients.
func BenchmarkSend(b *testing.B) {
	srv := mailertest.NewServer()
	defer srv.Close()
	c, err := NewConnection(srv.Addr(), WithSecurity(SecurityNone))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}},
		Subject: "bench", Text: strings.Repeat("A line of text in the benchmark message body.\n", 40)}
	raw := []byte("Subject: bench\r\n\r\n" + strings.Repeat("A line of text in the benchmark message body.\r\n", 40))
	ctx := testCtx(b)
	b.Run("Send", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Send(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SendRaw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.SendRaw(ctx, Envelope{From: "a@example.com", To: []string{"b@example.com"}}, bytes.NewReader(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRateLimitCost measures Send with a rate limit that never has to
// wait against Send without one, each on a server of its own (mailertest
// keeps every message, which slows a long-lived server down): the cost of
// the limiter itself (docs/benchmarks.md reports the ratio).
func BenchmarkRateLimitCost(b *testing.B) {
	msg := &Message{From: Recipient{Address: "a@example.com"}, To: []Recipient{{Address: "b@example.com"}},
		Subject: "bench", Text: strings.Repeat("A line of text in the benchmark message body.\n", 40)}
	ctx := testCtx(b)
	for _, limited := range []bool{false, true} {
		name := "off"
		if limited {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			srv := mailertest.NewServer()
			defer srv.Close()
			opts := []Option{WithSecurity(SecurityNone)}
			if limited {
				opts = append(opts, WithRateLimit(1<<30, time.Second, 1<<30))
			}
			c, err := NewConnection(srv.Addr(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Connect(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What the limiter adds to each message, alone: machine noise at 0 ms
	// is larger than the difference between "on" and "off".
	b.Run("limiter alone", func(b *testing.B) {
		l := newLimiter(&rateConfig{limit: 1 << 30, burst: 1 << 30})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

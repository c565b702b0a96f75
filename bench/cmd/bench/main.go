// Command bench measures mailer against the Go mailers people use
// (wneessen/go-mail, raw emersion/go-smtp, net/smtp) on one machine, through
// a latency-injecting relay at 0, 1 and 10 ms round trips, and prints a
// markdown table of ratios to raw go-smtp measured in the same run.
//
//	cd bench && go run ./cmd/bench
//
// Servers: the in-process mailertest server and Postfix's smtp-sink, with
// and without PIPELINING (install Debian's postfix package for it; the
// smtp-sink rows are skipped without it).
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	netsmtp "net/smtp"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/bench/relay"
	"github.com/gomailer/mailer/mailertest"
	gomail "github.com/wneessen/go-mail"
)

const (
	from = "sender@example.com"
	to   = "rcpt@example.com"
)

var raw = []byte("From: Sender <sender@example.com>\r\nTo: Rcpt <rcpt@example.com>\r\nSubject: bench\r\n" +
	"Message-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
	strings.Repeat("A line of text in the benchmark message body.\r\n", 40))

// client is one mailer on one established connection.
type client interface {
	send(ctx context.Context) error
	close()
}

type peer struct {
	name string
	dial func(ctx context.Context, addr string, conns int) (client, error)
}

var peers = []peer{
	{"mailer", dialOurs},
	{"mailer (SendRaw)", dialOurs},
	{"mailer (SendAll)", dialOurs},
	{"go-smtp (raw, reused)", dialGoSMTP},
	{"net/smtp (reused)", dialNetSMTP},
	{"go-mail (defaults)", func(ctx context.Context, addr string, _ int) (client, error) { return dialGoMail(ctx, addr) }},
	{"go-mail (no NOOP/RSET)", func(ctx context.Context, addr string, _ int) (client, error) {
		return dialGoMail(ctx, addr, gomail.WithoutNoop(), gomail.WithoutRset())
	}},
}

type ours struct {
	c   *mailer.Connection
	msg *mailer.Message // nil: SendRaw with the same bytes as the raw peers
	all bool            // SendAll: the whole batch as one stream
}

// sendAll sends n messages as one SendAll stream.
func (o *ours) sendAll(ctx context.Context, n int) error {
	for _, err := range o.c.SendAll(ctx, func(yield func(*mailer.Message) bool) {
		for range n {
			if !yield(o.msg) {
				return
			}
		}
	}) {
		if err != nil {
			return err
		}
	}
	return nil
}

func dialOurs(ctx context.Context, addr string, conns int) (client, error) {
	c, err := mailer.NewConnection(addr, mailer.WithSecurity(mailer.SecurityNone), mailer.WithMaxConnections(max(conns, 1)))
	if err != nil {
		return nil, err
	}
	msg := &mailer.Message{
		From: mailer.Recipient{Name: "Sender", Address: from}, To: []mailer.Recipient{{Name: "Rcpt", Address: to}},
		Subject: "bench", Text: strings.Repeat("A line of text in the benchmark message body.\n", 40),
	}
	return &ours{c: c, msg: msg}, c.Connect(ctx)
}

func (o *ours) send(ctx context.Context) error {
	if o.msg == nil {
		_, err := o.c.SendRaw(ctx, mailer.Envelope{From: from, To: []string{to}}, bytes.NewReader(raw))
		return err
	}
	_, err := o.c.Send(ctx, o.msg)
	return err
}
func (o *ours) close() { o.c.Close() }

type goSMTP struct{ c *smtp.Client }

func dialGoSMTP(_ context.Context, addr string, _ int) (client, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return nil, err
	}
	// A stuck server fails the row instead of hanging the run.
	c.CommandTimeout, c.SubmissionTimeout = time.Minute, time.Minute
	return &goSMTP{c}, c.Hello("localhost")
}

func (g *goSMTP) send(context.Context) error {
	return g.c.SendMail(from, []string{to}, bytes.NewReader(raw))
}
func (g *goSMTP) close() { g.c.Quit() }

type netSMTP struct{ c *netsmtp.Client }

func dialNetSMTP(_ context.Context, addr string, _ int) (client, error) {
	c, err := netsmtp.Dial(addr)
	if err != nil {
		return nil, err
	}
	return &netSMTP{c}, c.Hello("localhost")
}

func (n *netSMTP) send(context.Context) error {
	if err := n.c.Mail(from); err != nil {
		return err
	}
	if err := n.c.Rcpt(to); err != nil {
		return err
	}
	w, err := n.c.Data()
	if err != nil {
		return err
	}
	w.Write(raw)
	return w.Close()
}
func (n *netSMTP) close() { n.c.Quit() }

type goMail struct {
	c   *gomail.Client
	msg *gomail.Msg
}

func dialGoMail(ctx context.Context, addr string, opts ...gomail.Option) (client, error) {
	host, port, _ := strings.Cut(addr, ":")
	var p int
	fmt.Sscan(port, &p)
	c, err := gomail.NewClient(host, append([]gomail.Option{gomail.WithPort(p), gomail.WithTLSPolicy(gomail.NoTLS)}, opts...)...)
	if err != nil {
		return nil, err
	}
	msg := gomail.NewMsg()
	msg.From(from)
	msg.To(to)
	msg.Subject("bench")
	msg.SetBodyString(gomail.TypeTextPlain, strings.Repeat("A line of text in the benchmark message body.\n", 40))
	return &goMail{c, msg}, c.DialWithContext(ctx)
}

func (g *goMail) send(context.Context) error { return g.c.Send(g.msg) }
func (g *goMail) close()                     { g.c.Close() }

// server is an SMTP server under test.
type server struct {
	name string
	addr string
	stop func()
}

func startServers() []server {
	ms := mailertest.NewServer()
	servers := []server{{"mailertest", ms.Addr(), func() { ms.Close() }}}
	// The real Postfix (PIPELINING and CHUNKING) when scripts/test-servers
	// runs; bench/run starts it as root.
	if addr := os.Getenv("MAILER_TEST_POSTFIX_PLAIN"); addr != "" {
		servers = append(servers, server{"postfix", addr, func() {}})
	} else {
		log.Printf("MAILER_TEST_POSTFIX_PLAIN unset: the Postfix rows are skipped (bench/run starts it as root)")
	}
	sink, err := exec.LookPath("smtp-sink")
	if err != nil {
		sink = "/usr/sbin/smtp-sink"
	}
	if _, err := os.Stat(sink); err != nil {
		log.Printf("smtp-sink not found (Debian package postfix): its rows are skipped")
		return servers
	}
	for _, pipelining := range []bool{true, false} {
		addr := freeAddr()
		args := []string{"-u", "nobody", addr, "256"}
		name := "smtp-sink"
		if !pipelining {
			args = append([]string{"-p"}, args...)
			name = "smtp-sink -p"
		}
		cmd := exec.Command(sink, args...)
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		waitListening(addr)
		servers = append(servers, server{name, addr, func() { cmd.Process.Kill(); cmd.Wait() }})
	}
	return servers
}

// result is one measurement: messages per second and round trips per
// message.
type result struct {
	rate, turns float64
}

// measure sends n messages with one client (or conns concurrent ones)
// through a relay with the given round trip, and returns rate and turns.
func measure(p peer, srv server, rtt time.Duration, n, conns int) (result, error) {
	r, err := relay.Start(srv.addr, rtt)
	if err != nil {
		return result{}, err
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var clients []client
	if strings.HasPrefix(p.name, "mailer") {
		c, err := p.dial(ctx, r.Addr(), conns)
		if err != nil {
			return result{}, err
		}
		switch p.name {
		case "mailer (SendRaw)":
			c.(*ours).msg = nil
		case "mailer (SendAll)":
			c.(*ours).all = true
		}
		for range conns {
			clients = append(clients, c)
		}
		if c.(*ours).all {
			clients = clients[:1] // one stream over every session
		}
	} else {
		for range conns {
			c, err := p.dial(ctx, r.Addr(), 1)
			if err != nil {
				return result{}, err
			}
			clients = append(clients, c)
		}
	}
	defer clients[0].close()
	if !strings.HasPrefix(p.name, "mailer") {
		for _, c := range clients[1:] {
			defer c.close()
		}
	}
	// One message each to warm up (and, for mailer, to open its sessions).
	if err := run(ctx, clients, conns); err != nil {
		return result{}, err
	}
	before := r.Turns()
	start := time.Now()
	if err := run(ctx, clients, n); err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)
	return result{rate: float64(n) / elapsed.Seconds(), turns: float64(r.Turns()-before) / float64(n)}, nil
}

// run sends n messages spread over the clients, one goroutine per client,
// or as one stream for mailer's SendAll.
func run(ctx context.Context, clients []client, n int) error {
	if o, ok := clients[0].(*ours); ok && o.all {
		return o.sendAll(ctx, n)
	}
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := c.send(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return err
	}
	return nil
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func main() {
	reps := flag.Int("reps", 3, "repetitions of each figure (the median is reported)")
	child := flag.String("child", "", "internal: measure peak memory of one client in a child process")
	childAddr := flag.String("addr", "", "internal: the server for -child")
	flag.Parse()
	if *child != "" {
		bigSend(*child, *childAddr)
		return
	}
	servers := startServers()
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()

	fmt.Printf("Machine: %s/%s, %d CPUs, %s. Medians of %d runs; ratios are to raw go-smtp in the same run (higher is better for rate, lower for round trips).\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), *reps)
	rtts := []time.Duration{0, time.Millisecond, 10 * time.Millisecond}
	count := map[time.Duration]int{0: 300, time.Millisecond: 100, 10 * time.Millisecond: 20}
	for _, conns := range []int{1, 8} {
		fmt.Printf("### %d connection(s): messages per second, round trips per message\n\n", conns)
		fmt.Printf("| server | RTT | client | msg/s | ratio | round trips/msg |\n|---|---|---|---|---|---|\n")
		for _, srv := range servers {
			for _, rtt := range rtts {
				results := map[string]result{}
				for _, p := range peers {
					var rates, turns []float64
					for range *reps {
						res, err := measure(p, srv, rtt, count[rtt]*max(1, conns/2), conns)
						if err != nil {
							log.Printf("%s on %s at %v: %v", p.name, srv.name, rtt, err)
							break
						}
						rates, turns = append(rates, res.rate), append(turns, res.turns)
					}
					if len(rates) > 0 {
						results[p.name] = result{median(rates), median(turns)}
					}
				}
				base := results["go-smtp (raw, reused)"].rate
				for _, p := range peers {
					res, ok := results[p.name]
					if !ok {
						continue
					}
					fmt.Printf("| %s | %v | %s | %.0f | %.2f | %.1f |\n", srv.name, rtt, p.name, res.rate, res.rate/base, res.turns)
				}
			}
		}
		fmt.Println()
	}
	// The memory figure needs a server outside the measured process.
	plain := []string{"go-smtp+go-message", "mailer", "go-mail"}
	memoryTable(servers[len(servers)-1], "renders and sends it", plain...)
	memoryTable(servers[0], "renders and sends it", plain...) // mailertest: CHUNKING, so mailer's BDAT path
	memoryTable(servers[0], "DKIM-signs (Ed25519) and sends it",
		"go-msgauth (sign only)", "mailer + DKIM (read-once attachment)", "mailer + DKIM (file attachment)")
	renderTable()
}

// memoryTable runs each client in a child process that renders and sends a
// message with a 50 MiB attachment, and reports peak heap and RSS.
func memoryTable(srv server, title string, names ...string) {
	fmt.Printf("### 50 MiB attachment: peak heap and peak RSS of a process that %s (to %s)\n\n", title, srv.name)
	fmt.Printf("| client | peak heap MiB | ratio | peak RSS MiB | ratio |\n|---|---|---|---|---|\n")
	var baseHeap, baseRSS float64
	for _, name := range names {
		out, err := exec.Command(os.Args[0], "-child", name, "-addr", srv.addr).Output()
		if err != nil {
			log.Printf("%s: %v", name, err)
			continue
		}
		var heap, rss float64
		fmt.Sscan(string(out), &heap, &rss)
		if baseHeap == 0 {
			baseHeap, baseRSS = heap, rss
		}
		fmt.Printf("| %s | %.1f | %.2f | %.1f | %.2f |\n", name, heap, heap/baseHeap, rss, rss/baseRSS)
	}
	fmt.Println()
}

// dkimKey is the signing key of the DKIM memory figures.
var dkimKey = func() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

// bigSigned measures DKIM signing of the 50 MiB message: go-msgauth
// hashing mailer's rendering directly (the reference), and mailer signing
// and sending it with the attachment read once (spooled) or from a file
// (rendered twice).
func bigSigned(ctx context.Context, name, addr string, body io.Reader) error {
	msg := &mailer.Message{From: mailer.Recipient{Address: from}, To: []mailer.Recipient{{Address: to}}, Text: "big"}
	sig := mailer.DKIM{Domain: "example.com", Selector: "s", Key: dkimKey}
	switch name {
	case "go-msgauth (sign only)":
		msg.AttachReader("big.bin", body)
		signer, err := dkim.NewSigner(&dkim.SignOptions{Domain: sig.Domain, Selector: sig.Selector, Signer: dkimKey})
		if err != nil {
			return err
		}
		if _, err := msg.WriteTo(signer); err != nil {
			return err
		}
		return signer.Close()
	case "mailer + DKIM (file attachment)":
		f, err := os.CreateTemp("", "bench-big-*")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		if _, err := io.Copy(f, body); err != nil {
			return err
		}
		f.Close()
		if _, err := msg.AttachFile(f.Name()); err != nil {
			return err
		}
	default:
		msg.AttachReader("big.bin", body)
	}
	c, err := mailer.NewConnection(addr, mailer.WithSecurity(mailer.SecurityNone), mailer.WithDKIM(sig))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Send(ctx, msg)
	return err
}

// pattern is an endless cheap reader.
type pattern struct{ n uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.n = p.n*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.n >> 56)
	}
	return len(b), nil
}

func bigSend(name, addr string) {
	const size = 50 << 20
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	ctx := context.Background()
	body := io.LimitReader(&pattern{}, size)
	var err error
	switch name {
	case "mailer":
		c, _ := mailer.NewConnection(addr, mailer.WithSecurity(mailer.SecurityNone))
		msg := &mailer.Message{From: mailer.Recipient{Address: from}, To: []mailer.Recipient{{Address: to}}, Text: "big"}
		msg.AttachReader("big.bin", body)
		_, err = c.Send(ctx, msg)
		c.Close()
	case "go-msgauth (sign only)", "mailer + DKIM (read-once attachment)", "mailer + DKIM (file attachment)":
		err = bigSigned(ctx, name, addr, body)
	case "go-mail":
		host, port, _ := strings.Cut(addr, ":")
		var p int
		fmt.Sscan(port, &p)
		c, _ := gomail.NewClient(host, gomail.WithPort(p), gomail.WithTLSPolicy(gomail.NoTLS))
		msg := gomail.NewMsg()
		msg.From(from)
		msg.To(to)
		msg.SetBodyString(gomail.TypeTextPlain, "big")
		msg.AttachReader("big.bin", body)
		err = c.DialAndSend(msg)
	default:
		err = sendWithGoMessage(addr, body)
	}
	close(done)
	if err != nil {
		log.Fatal(err)
	}
	status, _ := os.ReadFile("/proc/self/status")
	var kb int
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), "kB"), &kb)
		}
	}
	fmt.Printf("%.2f %.2f\n", float64(peak.Load())/(1<<20), float64(kb)/1024)
}

// renderTable benchmarks rendering a text+HTML message with a small
// attachment.
func renderTable() {
	fmt.Printf("### Render a text+HTML message with a 8 KiB attachment (ratios to go-message used directly)\n\n")
	fmt.Printf("| renderer | ns/op | ratio | B/op | ratio | allocs/op | ratio |\n|---|---|---|---|---|---|---|\n")
	att := bytes.Repeat([]byte("%PDF"), 2048)
	text := strings.Repeat("Plain text body line.\n", 40)
	html := "<html><body>" + strings.Repeat("<p>HTML body line.</p>\n", 40) + "</body></html>"
	ours := &mailer.Message{From: mailer.Recipient{Address: from}, To: []mailer.Recipient{{Address: to}}, Subject: "Report", Text: text, HTML: html}
	ours.AttachBytes("small.pdf", att)
	gm := gomail.NewMsg()
	gm.From(from)
	gm.To(to)
	gm.Subject("Report")
	gm.SetBodyString(gomail.TypeTextPlain, text)
	gm.AddAlternativeString(gomail.TypeTextHTML, html)
	gm.AttachReadSeeker("small.pdf", bytes.NewReader(att))
	var base testing.BenchmarkResult
	for _, r := range []struct {
		name string
		w    io.WriterTo
	}{{"go-message (direct)", goMessageRender{text, html, att}}, {"mailer", ours}, {"go-mail", gm}} {
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.w.WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
		if base.N == 0 {
			base = res
		}
		ratio := func(a, b int64) float64 { return float64(a) / float64(b) }
		fmt.Printf("| %s | %d | %.2f | %d | %.2f | %d | %.2f |\n", r.name,
			res.NsPerOp(), ratio(res.NsPerOp(), base.NsPerOp()),
			res.AllocedBytesPerOp(), ratio(res.AllocedBytesPerOp(), base.AllocedBytesPerOp()),
			res.AllocsPerOp(), ratio(res.AllocsPerOp(), base.AllocsPerOp()))
	}
	fmt.Println()
}

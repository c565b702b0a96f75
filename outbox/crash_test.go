package outbox

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomailer/mailer"
	"github.com/gomailer/mailer/mailertest"
)

// holdProxy stands between a worker and the SMTP server and can hold the
// conversation at the k-th MAIL command (before it reaches the server) or
// at the k-th final dot (passed on to the server, whose reply is then
// withheld), so that the test can kill the worker right there.
type holdProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	point   string // "mail", "dot" or "" for none
	k, seen int
	held    chan string   // the message's recipient, when a hold begins
	release chan struct{} // closed to end every held conversation
	conns   []net.Conn
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: target, held: make(chan string, 1), release: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); p.arm("", 0) })
	go p.serve()
	return p
}

// arm sets the next hold point, ending the conversations of the previous
// worker.
func (p *holdProxy) arm(point string, k int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.release)
	for _, c := range p.conns {
		c.Close()
	}
	p.conns, p.point, p.k, p.seen, p.release = nil, point, k, 0, make(chan struct{})
}

func (p *holdProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		release := p.release
		p.mu.Unlock()
		var muted atomic.Bool // the server's replies must not pass
		go func() {           // server to client
			buf := make([]byte, 4096)
			for {
				n, err := s.Read(buf)
				if muted.Load() {
					<-release
					return
				}
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					c.Close()
					return
				}
			}
		}()
		go func() { // client to server, by lines
			defer s.Close()
			r := bufio.NewReader(c)
			inData := false
			rcpt := ""
			for {
				line, err := r.ReadBytes('\n')
				if err != nil {
					return
				}
				upper := strings.ToUpper(string(line))
				hold := false
				switch {
				case inData && string(line) == ".\r\n":
					inData = false
					hold = p.hit("dot")
					muted.Store(hold)
				case inData:
				case strings.HasPrefix(upper, "MAIL FROM"):
					hold = p.hit("mail")
					if hold {
						p.held <- rcptOf(r)
						<-release
						return
					}
				case strings.HasPrefix(upper, "RCPT TO:<"):
					rcpt = strings.TrimSuffix(strings.TrimSpace(string(line))[len("RCPT TO:<"):], ">")
				case strings.TrimSpace(upper) == "DATA":
					inData = true
				}
				if _, err := s.Write(line); err != nil {
					return
				}
				if hold {
					p.held <- rcpt
					<-release
					return
				}
			}
		}()
	}
}

// rcptOf peeks at the RCPT line pipelined after MAIL, for the report.
func rcptOf(r *bufio.Reader) string {
	b, _ := r.Peek(r.Buffered())
	for _, l := range bytes.Split(b, []byte("\r\n")) {
		if s := string(l); strings.HasPrefix(strings.ToUpper(s), "RCPT TO:<") {
			return strings.TrimSuffix(s[len("RCPT TO:<"):], ">")
		}
	}
	return ""
}

// hit counts an occurrence of point and reports whether to hold there.
func (p *holdProxy) hit(point string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.point != point {
		return false
	}
	p.seen++
	return p.seen == p.k
}

// crashChild is a worker that the crash test kills: it delivers from the
// SQLite outbox OUTBOX_DB through OUTBOX_SMTP and, at the OUTBOX_K-th
// message, holds in the middle of its data (OUTBOX_POINT=data) or after
// the server's reply (reply), printing "HOLD" for the test.
func crashChild() int {
	ctx := context.Background()
	point := os.Getenv("OUTBOX_POINT")
	k, _ := strconv.Atoi(os.Getenv("OUTBOX_K"))
	var mu sync.Mutex
	reads, replies := 0, 0
	hold := func(mid string) {
		fmt.Printf("HOLD %s\n", mid)
		select {}
	}
	testHookRead = func(mid string, offset int64) {
		mu.Lock()
		if offset == 0 {
			reads++
		}
		now := point == "data" && reads == k && offset > 0
		mu.Unlock()
		if now {
			hold(mid)
		}
	}
	testHookSent = func(mid string) {
		mu.Lock()
		replies++
		now := point == "reply" && replies == k
		mu.Unlock()
		if now {
			hold(mid)
		}
	}
	db, err := OpenSQLite(ctx, os.Getenv("OUTBOX_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	conn, err := mailer.NewConnection(os.Getenv("OUTBOX_SMTP"), mailer.WithSecurity(mailer.SecurityNone),
		mailer.WithTimeout(5*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := crashConfig()
	ob, err := NewSQLite(db, conn, cfg)
	if err == nil {
		err = ob.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	select {}
}

// crashConfig is the workers' configuration in the crash test: one message
// at a time, and a job cut short is rescued after three seconds.
func crashConfig() *Config {
	cfg := fastConfig()
	cfg.Workers = 1
	cfg.ID = "crash-worker"
	cfg.PollInterval = 20 * time.Millisecond
	cfg.SendTimeout = 2 * time.Second
	cfg.RescueAfter = 3 * time.Second
	return cfg
}

// TestCrash kills a worker process (SIGKILL) again and again at random
// points of a send: before MAIL, in the middle of the data, after the
// final dot before the reply, and after the reply before the outbox
// records it. After the last restart every message must have been
// delivered exactly once or be listed unknown, and the unknowns must be
// exactly the kills after the final dot.
func TestCrash(t *testing.T) {
	n, maxKills := 300, 40
	if testing.Short() {
		n, maxKills = 60, 10
	}
	srv := mailertest.NewServer(mailertest.WithoutChunking())
	defer srv.Close()
	proxy := newHoldProxy(t, srv.Addr())
	path := filepath.Join(t.TempDir(), "outbox.db")
	ctx := context.Background()
	db, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ob, err := NewSQLite(db, nil, &Config{InsertOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := ob.EnqueueTx(ctx, tx, testMessage(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	points := []string{"mail", "data", "dot", "reply"}
	kills := map[string]int{}
	killed := 0
	start := time.Now()
	for life := 0; ; life++ {
		point, k := "", 0
		if killed < maxKills {
			point, k = points[rand.IntN(len(points))], 1+rand.IntN(6)
		}
		proxyPoint := ""
		if point == "mail" || point == "dot" {
			proxyPoint = point
		}
		proxy.arm(proxyPoint, k)
		cmd := child("crash", "OUTBOX_DB="+path, "OUTBOX_SMTP="+proxy.ln.Addr().String(),
			"OUTBOX_POINT="+point, "OUTBOX_K="+strconv.Itoa(k))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		childHold := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "HOLD ") {
					childHold <- sc.Text()
				}
			}
			io.Copy(io.Discard, out)
		}()
		ended := waitLife(t, ob, proxy.held, childHold, 60*time.Second)
		cmd.Process.Kill()
		cmd.Wait()
		if ended {
			break
		}
		kills[point]++
		killed++
	}
	proxy.arm("", 0)

	delivered := map[string]int{}
	for _, m := range srv.Messages() {
		delivered[strings.Join(m.To, ",")]++
	}
	states := map[State]int{}
	unknownDelivered := 0
	for _, s := range States {
		items, err := ob.List(ctx, s, 0, n+1)
		if err != nil {
			t.Fatal(err)
		}
		states[s] = len(items)
		for _, it := range items {
			d := delivered[strings.Join(it.Envelope.To, ",")]
			switch {
			case s == StateSent && d != 1:
				t.Errorf("%s: sent, delivered %d times", it.MessageID, d)
			case s == StateUnknown && d > 1:
				t.Errorf("%s: unknown, delivered %d times", it.MessageID, d)
			case s == StateUnknown:
				unknownDelivered += d
			case s != StateSent:
				t.Errorf("%s: left %s (%s)", it.MessageID, s, it.LastError)
			}
		}
	}
	if states[StateSent]+states[StateUnknown] != n {
		t.Errorf("%d sent + %d unknown, want %d messages in all", states[StateSent], states[StateUnknown], n)
	}
	afterDot := kills["dot"] + kills["reply"]
	if states[StateUnknown] != afterDot {
		t.Errorf("%d unknown, want %d (the kills after the final dot)", states[StateUnknown], afterDot)
	}
	fmt.Printf("crash test: %d messages, %d kills (before MAIL %d, mid-DATA %d, after the dot %d, after the reply %d) in %v: "+
		"%d delivered once and sent, %d unknown (%d of them delivered), 0 lost, 0 twice\n",
		n, killed, kills["mail"], kills["data"], kills["dot"], kills["reply"], time.Since(start).Round(time.Millisecond),
		states[StateSent], states[StateUnknown], unknownDelivered)
}

// waitLife waits until the worker holds (false) or, every message settled,
// the outbox has nothing left to do (true). It fails the test after
// timeout.
func waitLife(t *testing.T, ob *Outbox[*sql.Tx], proxyHeld, childHold <-chan string, timeout time.Duration) bool {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-proxyHeld:
			return false
		case <-childHold:
			return false
		case <-deadline:
			counts, _ := ob.Counts(context.Background())
			t.Fatalf("worker neither held nor finished in %v; counts %v", timeout, counts)
		case <-tick.C:
			counts, err := ob.Counts(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if counts[StateQueued] == 0 && counts[StateSending] == 0 {
				return true
			}
		}
	}
}

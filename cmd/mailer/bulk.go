package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"text/template"
	"time"

	"github.com/gomailer/mailer"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// bulkFlags are send's flags for one message per row of a file.
type bulkFlags struct {
	recipients    string
	results       string
	connections   int
	maxPerSession int
}

// addBulkFlags defines the bulk flags on fs.
func addBulkFlags(fs *pflag.FlagSet) *bulkFlags {
	b := &bulkFlags{}
	fs.StringVar(&b.recipients, "recipients", "", "CSV (with a header row) or JSON-lines file: one message per row, to its email column")
	fs.StringVar(&b.results, "results", "", "per-row result file, JSON lines (default: the recipients file + .results.jsonl); rows it records as sent (or of unknown outcome) are skipped")
	fs.IntVar(&b.connections, "connections", 1, "SMTP connections to send through at once")
	fs.IntVar(&b.maxPerSession, "max-per-session", 0, "close a session with QUIT after N messages and open another (default: no limit)")
	return b
}

// row is one recipient: its place in the file (from 1), its address and
// the values the templates see.
type row struct {
	n       int
	email   string
	name    string
	data    map[string]any
	message *mailer.Message
}

// result is one line of the result file.
type result struct {
	Row       int    `json:"row"`
	Email     string `json:"email"`
	Status    string `json:"status"` // "sent", "failed" or "unknown"
	MessageID string `json:"message_id,omitempty"`
	Response  string `json:"response,omitempty"`
	Error     string `json:"error,omitempty"`
	Time      string `json:"time"`
}

// readRows reads a CSV file with a header row, or a JSON-lines file of
// objects (.jsonl, .ndjson, or content starting with "{").
func readRows(path string) ([]*row, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, inputErrorf("reading the recipients: %v", err)
	}
	var rows []*row
	if strings.HasSuffix(path, ".jsonl") || strings.HasSuffix(path, ".ndjson") || bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for line := 1; sc.Scan(); line++ {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			m := map[string]any{}
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				return nil, dataErrorf("%s:%d: %v", path, line, err)
			}
			rows = append(rows, &row{n: line, data: m})
		}
		if err := sc.Err(); err != nil {
			return nil, inputErrorf("reading the recipients: %v", err)
		}
	} else {
		r := csv.NewReader(bytes.NewReader(data))
		records, err := r.ReadAll()
		if err != nil {
			return nil, dataErrorf("%s: %v", path, err)
		}
		if len(records) == 0 {
			return nil, dataErrorf("%s is empty", path)
		}
		header := records[0]
		for i, rec := range records[1:] {
			m := map[string]any{}
			for j, col := range header {
				m[strings.TrimSpace(col)] = rec[j]
			}
			rows = append(rows, &row{n: i + 1, data: m})
		}
	}
	for _, r := range rows {
		r.email = column(r.data, "email", "address", "to")
		r.name = column(r.data, "name")
		if r.email == "" {
			return nil, dataErrorf("%s: row %d has no email column", path, r.n)
		}
	}
	return rows, nil
}

// column returns the first of the named columns that has a string value.
func column(data map[string]any, names ...string) string {
	for _, n := range names {
		for k, v := range data {
			if s, ok := v.(string); ok && strings.EqualFold(k, n) && s != "" {
				return strings.TrimSpace(s)
			}
		}
	}
	return ""
}

// readResults reads the rows a previous run recorded, last word first.
func readResults(path string) (map[int]result, error) {
	done := map[int]result{}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return done, nil
	}
	if err != nil {
		return nil, inputErrorf("reading the results: %v", err)
	}
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r result
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, dataErrorf("%s:%d: %v (not a result file?)", path, i+1, err)
		}
		done[r.Row] = r
	}
	return done, nil
}

// progress reports each row: a bar on a terminal, a line otherwise.
type progress struct {
	bar *progressbar.ProgressBar // nil when w is not a terminal
	w   io.Writer
}

// newProgress reports on w: a bar when w is a terminal, lines otherwise.
func newProgress(w io.Writer, total int) *progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &progress{bar: progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("sending"),
			progressbar.OptionShowCount(),
			progressbar.OptionClearOnFinish()), w: w}
	}
	return &progress{w: w}
}

// report shows one row's outcome: a line, or on a terminal a step of the
// bar, with a line above it for a failure.
func (p *progress) report(r result) {
	line := fmt.Sprintf("row %d <%s>: %s", r.Row, r.Email, r.Status)
	if r.Error != "" {
		line += ": " + r.Error
	}
	if p.bar == nil {
		fmt.Fprintln(p.w, line)
		return
	}
	if r.Error != "" {
		p.bar.Clear()
		fmt.Fprintln(p.w, line)
	}
	p.bar.Add(1)
}

// templates are the subject and body, parsed once.
type templates struct {
	subject *template.Template
	text    *template.Template
	html    *htmltemplate.Template
}

// parseTemplates parses the subject and body templates: body is an
// html/template with --html.
func parseTemplates(m *mergedMessage, body string) (*templates, error) {
	var t templates
	var err error
	if t.subject, err = template.New("subject").Option("missingkey=error").Parse(m.subject); err != nil {
		return nil, usageErrorf("--subject template: %v", err)
	}
	if m.html {
		t.html, err = htmltemplate.New("body").Option("missingkey=error").Parse(body)
	} else {
		t.text, err = template.New("body").Option("missingkey=error").Parse(body)
	}
	if err != nil {
		return nil, usageErrorf("body template: %v", err)
	}
	return &t, nil
}

// execute fills the templates with data.
func (t *templates) execute(data map[string]any) (subject, body string, err error) {
	var s, b strings.Builder
	if err := t.subject.Execute(&s, data); err != nil {
		return "", "", err
	}
	if t.html != nil {
		err = t.html.Execute(&b, data)
	} else {
		err = t.text.Execute(&b, data)
	}
	return s.String(), b.String(), err
}

// run sends one message per row that the result file does not record as
// sent, appending each row's outcome to it.
func (b *bulkFlags) run(cmd *cobra.Command, s *settings, m *mergedMessage) error {
	if b.connections < 1 {
		return usageErrorf("--connections must be at least 1")
	}
	if b.maxPerSession < 0 {
		return usageErrorf("--max-per-session must be 0 (no limit) or more")
	}
	if len(m.to) > 0 {
		return usageErrorf("--to and --recipients do not go together: the rows are the To recipients")
	}
	rows, err := readRows(b.recipients)
	if err != nil {
		return err
	}
	resultsPath := b.results
	if resultsPath == "" {
		resultsPath = b.recipients + ".results.jsonl"
	}
	done, err := readResults(resultsPath)
	if err != nil {
		return err
	}
	body, err := m.readBody(cmd.InOrStdin())
	if err != nil {
		return err
	}
	tmpl, err := parseTemplates(m, body)
	if err != nil {
		return err
	}

	out, err := os.OpenFile(resultsPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return inputErrorf("opening the results: %v", err)
	}
	defer out.Close()
	enc := json.NewEncoder(out)
	stderr := cmd.ErrOrStderr()
	record := func(r result) error {
		r.Time = time.Now().UTC().Format(time.RFC3339)
		if err := enc.Encode(r); err != nil {
			return &exitError{code: exIOErr, msg: "writing the results: " + err.Error()}
		}
		return nil
	}

	var todo []*row
	var sent, skipped, failed, unknown, unknownSkipped int
	var firstFailure *exitError
	fail := func(r *row, status string, e *exitError) error {
		failed++
		if firstFailure == nil || (firstFailure.code == exTempFail && e.code != exTempFail) {
			firstFailure = e
		}
		return record(result{Row: r.n, Email: r.email, Status: status, Error: e.msg})
	}
	for _, r := range rows {
		// A row of unknown outcome may have been delivered: it is not
		// sent again until its line is removed from the result file.
		if prev, ok := done[r.n]; ok && (prev.Status == "sent" || prev.Status == "unknown") {
			if !strings.EqualFold(prev.Email, r.email) {
				return configErrorf("%s records row %d as <%s>, but %s has <%s> there: it belongs to another recipients file",
					resultsPath, r.n, prev.Email, b.recipients, r.email)
			}
			if prev.Status == "unknown" {
				unknownSkipped++
			} else {
				skipped++
			}
			continue
		}
		todo = append(todo, r)
	}
	prog := newProgress(stderr, len(todo))

	var ready []*row
	for _, r := range todo {
		subject, text, err := tmpl.execute(r.data)
		if err != nil {
			err = dataErrorf("filling in the templates: %v", err)
		} else {
			to := r.email
			if r.name != "" {
				to = mailer.Recipient{Name: r.name, Address: r.email}.String()
			}
			r.message, err = m.message(subject, text, []string{to})
		}
		if err != nil {
			e := explain("", err)
			if err := fail(r, "failed", e); err != nil {
				return err
			}
			prog.report(result{Row: r.n, Email: r.email, Status: "failed", Error: e.msg})
			continue
		}
		ready = append(ready, r)
	}

	var stats mailer.Stats
	var interrupted atomic.Bool
	i := 0 // the rows of ready that were attempted
	if len(ready) > 0 {
		opts := append(s.all(), mailer.WithMaxConnections(b.connections))
		if b.maxPerSession > 0 {
			opts = append(opts, mailer.WithMaxMessagesPerSession(b.maxPerSession))
		}
		c, err := mailer.NewConnection(s.server, opts...)
		if err != nil {
			return configErrorf("%s", oneLine(err))
		}
		defer c.Close()
		// SIGINT or SIGTERM stops taking rows: the messages in flight
		// finish and are recorded, so that the next run sends exactly the
		// rest. A second signal kills as usual.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sig)
		msgs := func(yield func(*mailer.Message) bool) {
			for _, r := range ready {
				select {
				case <-sig:
					signal.Stop(sig)
					interrupted.Store(true)
					return
				default:
				}
				if !yield(r.message) {
					return
				}
			}
		}
		for res, err := range c.SendAll(context.Background(), msgs) {
			r := ready[i]
			i++
			var rec result
			if err != nil {
				e := explain("sending to "+s.server, err)
				rec = result{Row: r.n, Email: r.email, Status: "failed", Error: e.msg}
				if errors.Is(err, mailer.ErrOutcomeUnknown) {
					rec.Status = "unknown"
					unknown++
				}
				if err := fail(r, rec.Status, e); err != nil {
					return err
				}
			} else {
				sent++
				rec = result{Row: r.n, Email: r.email, Status: "sent", MessageID: res.MessageID, Response: res.Response}
				if err := record(rec); err != nil {
					return err
				}
			}
			prog.report(rec)
		}
		stats = c.Stats()
	}
	skippedNote := ""
	if unknownSkipped > 0 {
		skippedNote = fmt.Sprintf(", %d of unknown outcome", unknownSkipped)
	}
	fmt.Fprintf(stderr, "mailer: sent %d, failed %d, skipped %d (already sent)%s%s; results in %s\n",
		sent, failed, skipped, skippedNote, statsNote(stats), resultsPath)
	if unknownSkipped > 0 {
		fmt.Fprintf(stderr, "mailer: %d rows of unknown outcome (status \"unknown\" in %s) were not sent again: check whether they arrived, and delete their lines to send them\n",
			unknownSkipped, resultsPath)
	}
	if interrupted.Load() {
		code := exTempFail // try again later: the rest is still to send
		if firstFailure != nil {
			code = firstFailure.code
		}
		return &exitError{code: code, msg: fmt.Sprintf("interrupted: %d rows not sent yet; run the same command again to send them", len(ready)-i)}
	}
	if firstFailure != nil {
		again := "run the same command again to retry the failed rows"
		if unknown > 0 {
			again += fmt.Sprintf(" (not the %d of unknown outcome: they may have been delivered)", unknown)
		}
		return &exitError{code: firstFailure.code, msg: fmt.Sprintf("%d of %d messages failed, the first: %s; %s", failed, len(todo), firstFailure.msg, again)}
	}
	return nil
}

// statsNote describes the retries, the waits for --rate and the sessions
// opened, for the summary line; "" when there was nothing to say.
func statsNote(st mailer.Stats) string {
	var parts []string
	if st.Retries > 0 {
		parts = append(parts, fmt.Sprintf("%d retries", st.Retries))
	}
	if st.RateLimitWaits > 0 {
		parts = append(parts, fmt.Sprintf("%d waited for the rate limit", st.RateLimitWaits))
	}
	if st.SlowDowns > 0 {
		parts = append(parts, fmt.Sprintf("slowed down %d times by the server", st.SlowDowns))
	}
	if st.SessionsOpened > 1 {
		parts = append(parts, fmt.Sprintf("%d sessions", st.SessionsOpened))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, ", ")
}

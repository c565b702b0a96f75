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
	"slices"
	"strings"
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
	recipients  string
	results     string
	connections int
}

// addBulkFlags defines the bulk flags on fs.
func addBulkFlags(fs *pflag.FlagSet) *bulkFlags {
	b := &bulkFlags{}
	fs.StringVar(&b.recipients, "recipients", "", "CSV (with a header row) or JSON-lines file: one message per row, to its email column")
	fs.StringVar(&b.results, "results", "", "per-row result file, JSON lines (default: the recipients file + .results.jsonl); rows it records as sent are skipped")
	fs.IntVar(&b.connections, "connections", 1, "SMTP connections to send through at once")
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
	Status    string `json:"status"` // "sent" or "failed"
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
	var sent, skipped, failed int
	var firstFailure *exitError
	fail := func(r *row, e *exitError) error {
		failed++
		if firstFailure == nil || (firstFailure.code == exTempFail && e.code != exTempFail) {
			firstFailure = e
		}
		return record(result{Row: r.n, Email: r.email, Status: "failed", Error: e.msg})
	}
	for _, r := range rows {
		if prev, ok := done[r.n]; ok && prev.Status == "sent" {
			if !strings.EqualFold(prev.Email, r.email) {
				return configErrorf("%s records row %d as <%s>, but %s has <%s> there: it belongs to another recipients file",
					resultsPath, r.n, prev.Email, b.recipients, r.email)
			}
			skipped++
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
			if err := fail(r, e); err != nil {
				return err
			}
			prog.report(result{Row: r.n, Email: r.email, Status: "failed", Error: e.msg})
			continue
		}
		ready = append(ready, r)
	}

	if len(ready) > 0 {
		c, err := mailer.NewConnection(s.server, append(s.all(), mailer.WithMaxConnections(b.connections))...)
		if err != nil {
			return configErrorf("%s", oneLine(err))
		}
		defer c.Close()
		msgs := make([]*mailer.Message, len(ready))
		for i, r := range ready {
			msgs[i] = r.message
		}
		i := 0
		for res, err := range c.SendAll(context.Background(), slices.Values(msgs)) {
			r := ready[i]
			i++
			var rec result
			if err != nil {
				e := explain("sending to "+s.server, err)
				rec = result{Row: r.n, Email: r.email, Status: "failed", Error: e.msg}
				if err := fail(r, e); err != nil {
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
	}
	fmt.Fprintf(stderr, "mailer: sent %d, failed %d, skipped %d (already sent); results in %s\n", sent, failed, skipped, resultsPath)
	if firstFailure != nil {
		return &exitError{code: firstFailure.code, msg: fmt.Sprintf("%d of %d messages failed, the first: %s; run the same command again to retry the failed rows", failed, len(todo), firstFailure.msg)}
	}
	return nil
}

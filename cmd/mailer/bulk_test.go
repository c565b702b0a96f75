package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomailer/mailer/mailertest"
)

// readResultFile returns the result file's lines.
func readResultFile(t *testing.T, path string) []result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []result
	for line := range strings.Lines(string(data)) {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("result line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func TestBulkCSVResume(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "people.csv")
	csv := "email,name,plan\nann@example.com,Ann,gold\nbob@example.com,Bob,free\ncid@example.com,Cid,gold\n"
	if err := os.WriteFile(csvPath, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(dir, "results.jsonl")
	args := func(srv *mailertest.Server) []string {
		return []string{"send", "--server", srv.Addr(), "--security", "none", "--sender", "News news@example.com",
			"--recipients", csvPath, "--results", results, "--connections", "2",
			"--subject", "Your {{.plan}} plan", "--body", "Dear {{.name}},\nthanks.\n"}
	}

	// First run: Bob's address is refused for now.
	srv := plainServer(t, mailertest.WithRecipientReply("bob@example.com", 451, "4.2.2", "mailbox full"))
	r := mailerRun(t, args(srv)...)
	r.wantCode(t, exTempFail)
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "row 2 <bob@example.com>: failed") || !strings.Contains(r.stderr, "row 1 <ann@example.com>: sent") {
		t.Errorf("no progress lines on stderr:\n%s", r.stderr)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for _, m := range msgs {
		switch m.To[0] {
		case "ann@example.com":
			if header(m.Data, "Subject") != "Your gold plan" || !strings.Contains(string(m.Data), "Dear Ann,") ||
				header(m.Data, "To") != "Ann <ann@example.com>" {
				t.Errorf("Ann's message:\n%s", m.Data)
			}
		case "cid@example.com":
		default:
			t.Errorf("message to %v", m.To)
		}
	}
	res := readResultFile(t, results)
	if len(res) != 3 {
		t.Fatalf("%d results, want 3", len(res))
	}
	status := map[string]string{}
	for _, r := range res {
		status[r.Email] = r.Status
	}
	if status["ann@example.com"] != "sent" || status["bob@example.com"] != "failed" || status["cid@example.com"] != "sent" {
		t.Errorf("results %v", status)
	}

	// Second run: only Bob's row is sent again.
	srv2 := plainServer(t)
	r = mailerRun(t, args(srv2)...)
	r.wantCode(t, 0)
	msgs = srv2.Messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"bob@example.com"}) {
		t.Fatalf("second run sent %d messages (%v), want only Bob's", len(msgs), msgs)
	}
	if !strings.Contains(r.stderr, "sent 1, failed 0, skipped 2") {
		t.Errorf("stderr: %s", r.stderr)
	}

	// Third run: nothing left to send.
	srv3 := plainServer(t)
	mailerRun(t, args(srv3)...).wantCode(t, 0)
	if n := len(srv3.Messages()); n != 0 {
		t.Errorf("third run sent %d messages", n)
	}
}

func TestBulkJSONLinesHTML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "people.jsonl")
	lines := `{"email": "ann@example.com", "name": "Ann <admin>", "items": ["a", "b"]}` + "\n" +
		`{"email": "bob@example.com"}` + "\n"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := plainServer(t)
	r := mailerRun(t, "send", "--server", srv.Addr(), "--security", "none", "--sender", "s@example.com",
		"--recipients", path, "--html", "--subject", "Hi",
		"--body", "<p>{{.name}}</p>{{range .items}}<i>{{.}}</i>{{end}}")
	// Bob's row has no name: the template fails for that row alone.
	r.wantCode(t, exDataErr)
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want Ann's only", len(msgs))
	}
	if data := string(msgs[0].Data); !strings.Contains(data, "&lt;admin&gt;") || !strings.Contains(data, "<i>b</i>") {
		t.Errorf("HTML template not applied with escaping:\n%s", data)
	}
	res := readResultFile(t, path+".results.jsonl")
	slices.SortFunc(res, func(a, b result) int { return a.Row - b.Row })
	if len(res) != 2 || res[1].Status != "failed" || !strings.Contains(res[1].Error, "name") {
		t.Errorf("results %+v", res)
	}
}

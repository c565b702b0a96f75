package mailer_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"go/types"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDocsSnippetsCompile compiles every ```go block of README.md and
// docs/*.md with go build, so that the documentation cannot drift from the
// API unnoticed. Failures are reported as FILE:LINE of the Markdown.
//
// A block that starts with "package" is compiled as it is. Any other block is
// a fragment: lines starting at column 0 with "func ", "type ", "var (",
// "const" or "import" (with the indented lines and closing brackets after
// them) stay at top level, and the rest becomes the body of a function that
// returns an error, so "return err" works. A name the fragment uses without
// declaring it is imported when docPackages knows it (fmt, mailer, tls...) or
// declared when docVars does (ctx, c, msg...); any other undeclared name is
// an error. A variable the fragment declares is used right after its
// declaration, so that showing "res, err := c.Send(ctx, msg)" is not an
// error. Everything else must compile: a wrong argument, a missing method or
// a repeated ":=" fails the test.
//
// A block that is deliberately not Go must say so with its fence (```text,
// ```sh): a fence without a language is an error, so nothing is skipped
// silently.
func TestDocsSnippetsCompile(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to compile the documentation's snippets: %v", err)
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatalf("run the test from the module root: %v", err)
	}

	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append([]string{filepath.Join(root, "README.md")}, pages...)

	var snippets []*docSnippet
	for _, page := range pages {
		src, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, page)
		blocks, problems := goBlocks(page, rel, string(src))
		for _, p := range problems {
			t.Error(p)
		}
		snippets = append(snippets, blocks...)
	}
	if len(snippets) == 0 {
		t.Fatal("no ```go blocks found in README.md and docs/*.md")
	}

	// One package per snippet, in a directory that ./... ignores.
	dir, err := os.MkdirTemp(root, "_docsnippets")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	known := availablePackages(string(gomod))
	var pkgs []string
	byDir := map[string]*docSnippet{}
	failed := false
	for i, s := range snippets {
		var problems []string
		s.source, problems = s.program(known)
		if len(problems) > 0 {
			t.Errorf("%s:%d: the ```go block does not parse:\n\t%s\nparsed as:\n%s",
				s.rel, s.line, strings.Join(problems, "\n\t"), s.source)
			failed = true
			continue
		}
		name := fmt.Sprintf("s%03d", i)
		pkg := filepath.Join(dir, name)
		if err := os.Mkdir(pkg, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkg, "snippet.go"), s.source, 0o644); err != nil {
			t.Fatal(err)
		}
		byDir[name] = s
		pkgs = append(pkgs, "./"+filepath.ToSlash(filepath.Join(filepath.Base(dir), name)))
	}
	if len(pkgs) == 0 {
		return
	}

	cmd := exec.Command(goTool, append([]string{"build"}, pkgs...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err == nil {
		if !failed {
			t.Logf("%d ```go blocks from %d pages compile", len(snippets), len(pages))
		}
		return
	}

	// The compiler groups its messages under "# package" lines, and the
	// //line directives make it give Markdown positions.
	msgs := map[*docSnippet][]string{}
	var cur *docSnippet
	var stray []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case line == "":
		case strings.HasPrefix(line, "# "):
			cur = byDir[path.Base(strings.TrimPrefix(line, "# "))]
		case cur != nil:
			line = strings.TrimPrefix(strings.ReplaceAll(line, root+string(filepath.Separator), ""), "./")
			msgs[cur] = append(msgs[cur], line)
		default:
			stray = append(stray, line)
		}
	}
	for _, s := range snippets {
		if m := msgs[s]; len(m) > 0 {
			t.Errorf("%s:%d: the ```go block does not compile:\n\t%s\ncompiled as:\n%s",
				s.rel, s.line, strings.Join(m, "\n\t"), s.source)
		}
	}
	if len(stray) > 0 || len(msgs) == 0 {
		t.Errorf("go build: %v\n%s", err, strings.Join(stray, "\n"))
	}
}

// docPackages are the packages a fragment may use without importing them,
// by the name it uses. Modules outside the standard library count only when
// go.mod requires them.
var docPackages = map[string]string{
	"bufio":      "bufio",
	"bytes":      "bytes",
	"context":    "context",
	"embed":      "embed",
	"errors":     "errors",
	"filepath":   "path/filepath",
	"fmt":        "fmt",
	"fs":         "io/fs",
	"http":       "net/http",
	"io":         "io",
	"log":        "log",
	"mailer":     "github.com/gomailer/mailer",
	"mailertest": "github.com/gomailer/mailer/mailertest",
	"net":        "net",
	"oauth2":     "golang.org/x/oauth2",
	"os":         "os",
	"proxy":      "golang.org/x/net/proxy",
	"sasl":       "github.com/emersion/go-sasl",
	"signal":     "os/signal",
	"slog":       "log/slog",
	"smtp":       "github.com/emersion/go-smtp",
	"strings":    "strings",
	"sync":       "sync",
	"testing":    "testing",
	"time":       "time",
	"tls":        "crypto/tls",
	"url":        "net/url",
	"x509":       "crypto/x509",
}

// docVars are the variables a fragment may use without declaring them.
var docVars = map[string]struct{ typ, pkg string }{
	"c":      {"*mailer.Connection", "mailer"},
	"ctx":    {"context.Context", "context"},
	"err":    {"error", ""},
	"logger": {"*slog.Logger", "slog"},
	"msg":    {"*mailer.Message", "mailer"},
	"pool":   {"*x509.CertPool", "x509"},
	"srv":    {"*mailertest.Server", "mailertest"},
	"ts":     {"mailer.TokenSource", "mailer"},
}

// availablePackages is docPackages less the packages of modules that go.mod
// neither is nor requires.
func availablePackages(gomod string) map[string]string {
	var modules []string // this module, then the required ones
	for _, line := range strings.Split(gomod, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "module":
			modules = append(modules, f[1])
		case len(f) >= 3 && f[0] == "require":
			modules = append(modules, f[1])
		case len(f) >= 2 && strings.Count(f[0], ".") > 0 && strings.HasPrefix(f[1], "v"):
			modules = append(modules, f[0]) // inside a require block
		}
	}
	known := map[string]string{}
	for name, p := range docPackages {
		first, _, _ := strings.Cut(p, "/")
		std := !strings.Contains(first, ".")
		if std || slices.ContainsFunc(modules, func(m string) bool { return p == m || strings.HasPrefix(p, m+"/") }) {
			known[name] = p
		}
	}
	return known
}

// docSnippet is one ```go block.
type docSnippet struct {
	abs, rel string   // the Markdown file
	line     int      // the line of the opening fence
	lines    []string // the block's content
	source   []byte   // the Go file it was compiled as
}

var fenceRE = regexp.MustCompile("^( {0,3})(`{3,}|~{3,})(.*)$")

// goBlocks returns the ```go blocks of a Markdown page, and a problem for
// each fence without a language and each unclosed fence.
func goBlocks(abs, rel, src string) ([]*docSnippet, []string) {
	var blocks []*docSnippet
	var problems []string
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		indent, fence, info := len(m[1]), m[2], strings.TrimSpace(m[3])
		lang := ""
		if f := strings.Fields(info); len(f) > 0 {
			lang = strings.ToLower(f[0])
		}
		end := -1
		for j := i + 1; j < len(lines); j++ {
			if c := fenceRE.FindStringSubmatch(lines[j]); c != nil && c[2][0] == fence[0] &&
				len(c[2]) >= len(fence) && strings.TrimSpace(c[3]) == "" {
				end = j
				break
			}
		}
		if end < 0 {
			problems = append(problems, fmt.Sprintf("%s:%d: unclosed %s fence", rel, i+1, fence))
			break
		}
		switch lang {
		case "":
			problems = append(problems, fmt.Sprintf("%s:%d: a fence without a language: "+
				"say ```go (compiled by this test) or ```text, ```sh...", rel, i+1))
		case "go", "golang":
			s := &docSnippet{abs: abs, rel: rel, line: i + 1}
			for _, l := range lines[i+1 : end] {
				for k := 0; k < indent && strings.HasPrefix(l, " "); k++ {
					l = l[1:]
				}
				s.lines = append(s.lines, strings.TrimSuffix(l, "\r"))
			}
			blocks = append(blocks, s)
		}
		i = end
	}
	return blocks, problems
}

// lineDirective makes the compiler report what follows as the given line
// of the Markdown file.
func (s *docSnippet) lineDirective(i int) string {
	return fmt.Sprintf("//line %s:%d:1\n", s.abs, s.line+1+i)
}

// program turns the snippet into a Go file.
func (s *docSnippet) program(known map[string]string) (src []byte, problems []string) {
	for _, l := range s.lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "//") {
			continue
		}
		if strings.HasPrefix(t, "package ") {
			return []byte(s.lineDirective(0) + strings.Join(s.lines, "\n") + "\n"), nil
		}
		break
	}

	// Split the lines into imports, top-level declarations and statements,
	// each run of lines preceded by a //line directive.
	var imports, decls, body strings.Builder
	next := map[*strings.Builder]int{} // the line each part continues with
	var prev *strings.Builder
	for i, l := range s.lines {
		var part *strings.Builder
		switch {
		case strings.HasPrefix(l, "import ") || strings.HasPrefix(l, "import("):
			part = &imports
		case isDeclStart(l):
			part = &decls
		case prev != &body && prev != nil && (strings.TrimSpace(l) == "" ||
			strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") ||
			strings.HasPrefix(l, "}") || strings.HasPrefix(l, ")")):
			part = prev // the declaration goes on
		default:
			part = &body
		}
		if n, ok := next[part]; !ok || n != i {
			part.WriteString(s.lineDirective(i))
		}
		part.WriteString(l + "\n")
		next[part] = i + 1
		prev = part
	}
	text := "package snippet\n" + imports.String() + decls.String() +
		"//line snippet-wrapper.go:1\nfunc snippet() error {\n" + body.String() +
		"//line snippet-wrapper.go:3\nreturn nil\n}\n"

	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "snippet.go", text, parser.SkipObjectResolution)
	if err != nil {
		if list, ok := err.(scanner.ErrorList); ok {
			for _, e := range list {
				problems = append(problems, s.position(e.Pos)+": "+e.Msg)
			}
		} else {
			problems = append(problems, err.Error())
		}
		return []byte(text), problems
	}
	tf := fset.File(f.Pos())

	// Declare what the fragment uses but does not declare or import: the
	// type checker, with every import empty, says which names those are.
	free := map[string]bool{}
	conf := types.Config{
		Importer: emptyImporter{},
		Error: func(err error) {
			if name, ok := strings.CutPrefix(err.(types.Error).Msg, "undefined: "); ok && token.IsIdentifier(name) {
				free[name] = true
			}
		},
	}
	conf.Check("snippet", fset, []*ast.File{f}, nil)
	imported := map[string]bool{}
	var importLines, varLines []string
	addImport := func(name string) {
		if p, ok := known[name]; ok && !imported[name] {
			imported[name] = true
			importLines = append(importLines, "import "+strconv.Quote(p))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(free)) {
		if v, ok := docVars[name]; ok {
			varLines = append(varLines, "var "+name+" "+v.typ)
			if v.pkg != "" {
				addImport(v.pkg)
			}
			continue
		}
		addImport(name)
	}

	// Use every variable the fragment declares, right after it is declared, so that
	// "declared and not used" is not an error. The additions go on existing
	// lines, which keeps every line where the directives say it is.
	edits := map[int]string{}
	use := func(at token.Pos, vars []string) {
		if len(vars) > 0 {
			edits[tf.Offset(at)] += "; _ = " + strings.Join(vars, "; _ = ") + "; "
		}
	}
	useAfter := func(list []ast.Stmt) {
		for _, st := range list {
			use(st.End(), blockVars([]ast.Stmt{st}))
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BlockStmt:
			useAfter(n.List)
		case *ast.CaseClause:
			useAfter(n.Body)
		case *ast.CommClause:
			useAfter(n.Body)
		case *ast.IfStmt:
			use(n.Body.Lbrace+1, blockVars([]ast.Stmt{n.Init}))
		case *ast.SwitchStmt:
			for _, cc := range n.Body.List {
				use(cc.(*ast.CaseClause).Colon+1, blockVars([]ast.Stmt{n.Init}))
			}
		case *ast.TypeSwitchStmt:
			for _, cc := range n.Body.List {
				use(cc.(*ast.CaseClause).Colon+1, blockVars([]ast.Stmt{n.Init, n.Assign}))
			}
		case *ast.ForStmt:
			use(n.Body.Lbrace+1, blockVars([]ast.Stmt{n.Init}))
		case *ast.RangeStmt:
			if n.Tok == token.DEFINE {
				use(n.Body.Lbrace+1, blockVars([]ast.Stmt{&ast.AssignStmt{Lhs: []ast.Expr{n.Key, n.Value}, Tok: token.DEFINE}}))
			}
		}
		return true
	})
	offsets := slices.Sorted(maps.Keys(edits))
	for i := len(offsets) - 1; i >= 0; i-- {
		o := offsets[i]
		text = text[:o] + edits[o] + text[o:]
	}
	// The imports go on the package line, the variables after everything:
	// no line moves.
	text = strings.Replace(text, "package snippet\n", "package snippet; "+strings.Join(importLines, "; ")+"\n", 1)
	return []byte(text + "//line snippet-wrapper.go:10\n" + strings.Join(varLines, "\n") + "\n"), nil
}

// position gives a parse error's position in Markdown terms; an error in the
// wrapper means the block ended too early.
func (s *docSnippet) position(p token.Position) string {
	if p.Filename == s.abs {
		return fmt.Sprintf("%s:%d", s.rel, p.Line)
	}
	return fmt.Sprintf("%s:%d (at the end of the block)", s.rel, s.line+len(s.lines))
}

// emptyImporter imports every package as an empty one, which is all the
// type checker needs to tell undeclared names from imported ones.
type emptyImporter struct{}

func (emptyImporter) Import(p string) (*types.Package, error) {
	name := path.Base(p)
	if strings.HasPrefix(name, "v") && strings.Trim(name[1:], "0123456789") == "" {
		name = path.Base(path.Dir(p)) // a major version suffix
	}
	name = strings.TrimPrefix(name, "go-")
	pkg := types.NewPackage(p, name)
	pkg.MarkComplete()
	return pkg, nil
}

func isDeclStart(l string) bool {
	for _, p := range []string{"func ", "type ", "var (", "const ", "const("} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// blockVars returns the variables declared directly in a list of statements.
func blockVars(stmts []ast.Stmt) []string {
	var vars []string
	for _, st := range stmts {
		switch st := st.(type) {
		case *ast.AssignStmt:
			if st.Tok == token.DEFINE {
				for _, e := range st.Lhs {
					if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
						vars = append(vars, id.Name)
					}
				}
			}
		case *ast.DeclStmt:
			if g, ok := st.Decl.(*ast.GenDecl); ok && g.Tok == token.VAR {
				for _, sp := range g.Specs {
					for _, id := range sp.(*ast.ValueSpec).Names {
						if id.Name != "_" {
							vars = append(vars, id.Name)
						}
					}
				}
			}
		}
	}
	slices.Sort(vars)
	return slices.Compact(vars)
}

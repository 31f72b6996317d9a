package doccheck

import (
	"regexp"
	"strings"
)

// Func is a test, benchmark, fuzz target or example a document names.
type Func struct {
	Name string
	// Dir is the package directory the document names it in
	// ("registration/internal/outbox: TestSendKeyEmail"); "" when it
	// names the function alone.
	Dir string
}

var (
	qualifiedFunc = regexp.MustCompile("`([a-z][a-z0-9_/]*): ((?:Test|Benchmark|Fuzz|Example)[A-Z0-9_]\\w*)`")
	anyFunc       = regexp.MustCompile(`\b(?:Test|Benchmark|Fuzz|Example)[A-Z0-9_]\w*`)
)

// Funcs returns the test functions d names.
func (d Doc) Funcs() []Func {
	var out []Func
	qualified := map[int]bool{} // offsets of the names found qualified
	for _, m := range qualifiedFunc.FindAllStringSubmatchIndex(d.Text, -1) {
		out = append(out, Func{Dir: d.Text[m[2]:m[3]], Name: d.Text[m[4]:m[5]]})
		qualified[m[4]] = true
	}
	for _, m := range anyFunc.FindAllStringIndex(d.Text, -1) {
		if !qualified[m[0]] {
			out = append(out, Func{Name: d.Text[m[0]:m[1]]})
		}
	}
	return out
}

// Bench is a go test -bench command a document shows.
type Bench struct {
	Pattern string // the -bench regular expression
	Dir     string // the package directory, without ./
}

var (
	goTest     = regexp.MustCompile("go test [^`]*?\\./[\\w/.-]+") // may wrap: no backtick, newlines allowed
	benchFlag  = regexp.MustCompile(`-bench\s+'?([^\s']+)'?`)
	packageDir = regexp.MustCompile(`\./([\w/.-]+)$`)
)

// Benches returns the go test -bench commands d shows.
func (d Doc) Benches() []Bench {
	var out []Bench
	for _, cmd := range goTest.FindAllString(d.Text, -1) {
		b, dir := benchFlag.FindStringSubmatch(cmd), packageDir.FindStringSubmatch(cmd)
		if b != nil && dir != nil {
			out = append(out, Bench{Pattern: b[1], Dir: strings.TrimSuffix(dir[1], "/...")})
		}
	}
	return out
}

// Route is an HTTP route a document names: a method and a path.
type Route struct{ Method, Path string }

var routeMention = regexp.MustCompile(`\b(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[^\s` + "`" + `)|,"?]*)`)

// Routes returns the routes d names as "METHOD /path" (a query left out).
func (d Doc) Routes() []Route {
	var out []Route
	for _, m := range routeMention.FindAllStringSubmatch(d.Text, -1) {
		out = append(out, Route{Method: m[1], Path: m[2]})
	}
	return out
}

var (
	codeSpan = regexp.MustCompile("`([^`\\s]+)`")
	link     = regexp.MustCompile(`\]\(([^)\s#]+)(?:#[^)]*)?\)`)
	// treeLine is the first column of a line of a directory tree in a
	// fenced block: a directory of the repository and its description.
	treeLine = regexp.MustCompile(`(?m)^([a-z][\w.-]*/(?:[\w.-]+/)*)\s{2,}\S`)
)

// fileExtensions are the endings that make a name in a code span a file.
var fileExtensions = []string{".go", ".md", ".yaml", ".yml", ".json", ".conf", ".sh", ".tmpl", ".html", ".js", ".css", ".mod", "Dockerfile", "Caddyfile"}

// Paths returns the names of files and directories of the repository d
// mentions: code spans that are a file (by its ending, or Makefile,
// go.work, .env.example) or a path under one of topDirs; relative links;
// and the first column of directory trees. A name with an ellipsis or a
// placeholder (<…>, {…}, *) is not one.
func (d Doc) Paths(topDirs []string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(d.Text, -1) {
		tok := m[1]
		if strings.ContainsAny(tok, "<>{}*…:@$=,|[]()\"'") || strings.Contains(tok, "...") ||
			strings.HasPrefix(tok, "/") || strings.HasPrefix(tok, "-") {
			continue
		}
		first, _, _ := strings.Cut(tok, "/")
		isFile := tok == "Makefile" || tok == "go.work" || tok == ".env.example"
		for _, ext := range fileExtensions {
			isFile = isFile || strings.HasSuffix(tok, ext)
		}
		underTop := false
		for _, dir := range topDirs {
			underTop = underTop || first == dir
		}
		if strings.Contains(first, ".") && strings.Contains(tok, "/") && !underTop {
			continue // a module path: golang.org/x/net/idna
		}
		if isFile || (underTop && strings.Contains(tok, "/")) {
			out = append(out, tok)
		}
	}
	for _, m := range link.FindAllStringSubmatch(d.Text, -1) {
		if !strings.Contains(m[1], "://") {
			out = append(out, m[1])
		}
	}
	for _, block := range fencedBlocks(d.Text) {
		for _, m := range treeLine.FindAllStringSubmatch(block, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// fencedBlocks returns the text of the ``` blocks of text.
func fencedBlocks(text string) []string {
	var out []string
	parts := strings.Split(text, "\n```")
	for i := 1; i < len(parts); i += 2 {
		out = append(out, parts[i])
	}
	return out
}

// Package doccheck reads the project's documents (README.md and docs/*.md)
// for the tests that keep them true of the code: the README's
// configuration tables, and the tests, benchmarks, files and routes the
// documents name. Only tests import it.
package doccheck

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Doc is one document of the project.
type Doc struct {
	Path string // from the repository's root, as README.md or docs/security.md
	Text string
}

// Root returns the repository's root: the directory of go.work, found
// from the test's working directory upwards.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test's directory")
		}
		dir = parent
	}
}

// Docs returns README.md and every docs/*.md.
func Docs(t testing.TB) []Doc {
	t.Helper()
	root := Root(t)
	paths, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	paths = append([]string{filepath.Join(root, "README.md")}, paths...)
	var docs []Doc
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		docs = append(docs, Doc{Path: filepath.ToSlash(rel), Text: string(b)})
	}
	return docs
}

// README returns the README.
func README(t testing.TB) Doc {
	t.Helper()
	return Docs(t)[0]
}

// tableVariable is the first cell of a configuration table's row.
var tableVariable = regexp.MustCompile("^\\| `([A-Z][A-Z0-9_]*)` \\|")

// ConfigTables returns the variables of the README's section
// "## Configuration", table by table: each table is named by the line
// before it ("Both services:", "auth:", "registration:"), without its colon.
func ConfigTables(t testing.TB) map[string][]string {
	t.Helper()
	text := README(t).Text
	start := strings.Index(text, "\n## Configuration\n")
	if start < 0 {
		t.Fatal("README.md has no section ## Configuration")
	}
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	tables := map[string][]string{}
	name := ""
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.HasSuffix(line, ":") && !strings.HasPrefix(line, "|"):
			name = strings.TrimSuffix(line, ":")
		case name != "":
			if m := tableVariable.FindStringSubmatch(line); m != nil {
				tables[name] = append(tables[name], m[1])
			}
		}
	}
	if len(tables) == 0 {
		t.Fatal("README.md's ## Configuration has no table")
	}
	return tables
}

// Variables returns the variables of a table of every section whose
// heading is heading (such as "#### Configuration" under "Email of the
// key"), whatever the table's name.
func Variables(t testing.TB, heading string) []string {
	t.Helper()
	var out []string
	text := README(t).Text
	for {
		i := strings.Index(text, "\n"+heading+"\n")
		if i < 0 {
			return out
		}
		text = text[i+len(heading)+2:]
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "#") {
				break
			}
			if m := tableVariable.FindStringSubmatch(line); m != nil {
				out = append(out, m[1])
			}
		}
	}
}

// CheckVariables fails t unless the variables load reads (asked through
// the lookup it is given, which finds none set) are exactly those of the
// README's configuration tables named.
func CheckVariables(t testing.TB, service string, load func(lookup func(string) (string, bool)) error, tables ...string) {
	t.Helper()
	var read []string
	if err := load(func(name string) (string, bool) {
		read = append(read, name)
		return "", false
	}); err != nil {
		t.Fatal(err)
	}
	all := ConfigTables(t)
	var listed []string
	for _, name := range tables {
		if len(all[name]) == 0 {
			t.Fatalf("README.md's ## Configuration has no table %q", name)
		}
		listed = append(listed, all[name]...)
	}
	extra, missing := Diff(read, listed)
	if len(extra) > 0 || len(missing) > 0 {
		t.Errorf("%s reads, and the README's Configuration does not list: %v\nlisted, and %s does not read: %v", service, extra, service, missing)
	}
}

// Diff returns the names in got but not in want, and those in want but not
// in got, each sorted.
func Diff(got, want []string) (extra, missing []string) {
	in := func(s []string, x string) bool {
		for _, y := range s {
			if x == y {
				return true
			}
		}
		return false
	}
	for _, x := range got {
		if !in(want, x) && !in(extra, x) {
			extra = append(extra, x)
		}
	}
	for _, x := range want {
		if !in(got, x) && !in(missing, x) {
			missing = append(missing, x)
		}
	}
	sort.Strings(extra)
	sort.Strings(missing)
	return extra, missing
}

package deploy

import (
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"pesto/shared/doccheck"
	"pesto/shared/redistest"
)

// notInTheRepository are files the documents name that are not the
// project's own, and why.
var notInTheRepository = map[string]string{
	"compose.migration.yaml": "docs/migration.md has the reader write it",
	"dynamic.migration.yaml": "docs/migration.md has the reader make it from docker/traefik/dynamic.yaml",
}

// Every test, benchmark, fuzz target and example README.md and docs/ name
// exists, in the package directory they name it in ("auth: TestX"); every
// go test -bench command finds a benchmark; every file and directory they
// mention exists.
func TestDocsNameWhatExists(t *testing.T) {
	root := doccheck.Root(t)
	files, dirs := walkRepository(t, root)
	funcs := testFuncs(t, root, files)
	topDirs := []string{}
	for d := range dirs {
		if !strings.Contains(d, "/") {
			topDirs = append(topDirs, d)
		}
	}
	exists := func(doc, name string) bool {
		name = strings.TrimSuffix(name, "/")
		for _, p := range []string{name, path.Join(path.Dir(doc), name)} {
			if files[p] || dirs[p] {
				return true
			}
		}
		for p := range files { // a path within a package: testdata/hashed-keys.json
			if strings.HasSuffix(p, "/"+name) {
				return true
			}
		}
		for p := range dirs {
			if strings.HasSuffix(p, "/"+name) {
				return true
			}
		}
		return false
	}
	for _, d := range doccheck.Docs(t) {
		for _, f := range d.Funcs() {
			switch in := funcs[f.Name]; {
			case len(in) == 0:
				t.Errorf("%s names %s: no such test function", d.Path, f.Name)
			case f.Dir != "" && !in[f.Dir]:
				t.Errorf("%s names %s: %s in %s, not in %s", d.Path, f.Dir+": "+f.Name, f.Name, dirNames(in), f.Dir)
			}
		}
		for _, b := range d.Benches() {
			re, err := regexp.Compile(b.Pattern)
			found := false
			for name, in := range funcs {
				found = found || err == nil && strings.HasPrefix(name, "Benchmark") && in[b.Dir] && re.MatchString(name)
			}
			if !found {
				t.Errorf("%s: go test -bench %s ./%s runs no benchmark", d.Path, b.Pattern, b.Dir)
			}
		}
		for _, p := range d.Paths(topDirs) {
			if _, ok := notInTheRepository[p]; !ok && !exists(d.Path, p) {
				t.Errorf("%s mentions %s: no such file or directory", d.Path, p)
			}
		}
	}
}

// Every route the documents name as "METHOD /path" is one that auth,
// registration or the demo API has: the real binaries, asked that method
// and path, do not all answer 404 Not found.
func TestDocsNameRealRoutes(t *testing.T) {
	rs := redistest.StartStandalone(t)
	authAddr, _ := startAuth(t, buildAuth(t), rs.URL)
	regAddr := startRegistration(t, buildCommand(t, "registration"), rs.URL)
	demoAddr := startDemoAPIBinary(t)
	notFound := func(method, url string) bool {
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", "https://docs.example") // a CORS preflight, for OPTIONS
		req.Header.Set("Access-Control-Request-Method", "POST")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode == http.StatusNotFound
	}
	seen := map[doccheck.Route]bool{}
	for _, d := range doccheck.Docs(t) {
		for _, r := range d.Routes() {
			if seen[r] {
				continue
			}
			seen[r] = true
			if notFound(r.Method, "http://"+authAddr+r.Path) && notFound(r.Method, "http://"+regAddr+r.Path) &&
				notFound(r.Method, "http://"+demoAddr+r.Path) {
				t.Errorf("%s names %s %s: neither auth nor registration nor the demo API has that route", d.Path, r.Method, r.Path)
			}
		}
	}
	if len(seen) < 10 {
		t.Fatalf("only %d routes named in the documents: is the pattern still right?", len(seen))
	}
}

// Only the configuration reads the environment: the services' code reads
// no variable but through their configuration files (whose variables the
// README's tables list: auth's and registration's docs tests), and their
// main functions hand os.LookupEnv to run.
func TestOnlyConfigurationReadsTheEnvironment(t *testing.T) {
	root := doccheck.Root(t)
	files, _ := walkRepository(t, root)
	reads := regexp.MustCompile(`\bos\.(Getenv|LookupEnv|Environ|ExpandEnv)\b|\bsyscall\.Getenv\b`)
	testKits := []string{"shared/redistest/", "shared/servicetest/", "shared/doccheck/"}
	for p := range files {
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") ||
			!(strings.HasPrefix(p, "auth/") || strings.HasPrefix(p, "registration/") || strings.HasPrefix(p, "shared/")) {
			continue
		}
		kit := false
		for _, k := range testKits {
			kit = kit || strings.HasPrefix(p, k)
		}
		if kit {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if !reads.MatchString(line) || strings.HasPrefix(strings.TrimSpace(line), "//") {
				continue
			}
			if path.Base(p) == "main.go" && strings.Contains(line, "run(ctx, args, os.LookupEnv,") {
				continue
			}
			t.Errorf("%s:%d reads the environment outside the configuration: %s", p, i+1, strings.TrimSpace(line))
		}
	}
}

// walkRepository returns the repository's files and directories, as paths
// from its root (slash-separated), leaving out .git.
func walkRepository(t *testing.T, root string) (files, dirs map[string]bool) {
	t.Helper()
	files, dirs = map[string]bool{}, map[string]bool{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case e.IsDir() && e.Name() == ".git":
			return filepath.SkipDir
		case e.IsDir():
			dirs[rel] = true
		default:
			files[rel] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, dirs
}

// testFuncs returns, for the name of every test, benchmark, fuzz target
// and example, the package directories that define one.
func testFuncs(t *testing.T, root string, files map[string]bool) map[string]map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz|Example)\w*)\(`)
	out := map[string]map[string]bool{}
	for p := range files {
		if !strings.HasSuffix(p, "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			if out[m[1]] == nil {
				out[m[1]] = map[string]bool{}
			}
			out[m[1]][path.Dir(p)] = true
		}
	}
	return out
}

func dirNames(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return strings.Join(out, ", ")
}

// adminSecret is the ADMIN_JWT_SECRET startRegistration gives
// registration.
var adminSecret = strings.Repeat("s", 32)

// startRegistration runs the registration binary on a free port, with CORS
// and the admin API configured (so that every route of it answers), and
// waits until it listens.
func startRegistration(t *testing.T, bin, redisURL string) (addr string) {
	t.Helper()
	addr = "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	_, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORT=" + port, "REDIS_URL=" + redisURL, "LOG_LEVEL=warn", "ENVIRONMENT=test",
		"CORS_ORIGINS=https://docs.example", "ADMIN_JWT_SECRET=" + adminSecret}
	startProcess(t, cmd)
	waitListening(t, "registration", addr)
	return addr
}

// startDemoAPIBinary runs the demo API (demoapi/) on a free port.
func startDemoAPIBinary(t *testing.T) (addr string) {
	t.Helper()
	bin := buildCommand(t, "demoapi")
	addr = "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	_, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORT=" + port}
	startProcess(t, cmd)
	waitListening(t, "demo API", addr)
	return addr
}

// buildCommand builds a command of this workspace (auth, registration,
// demoapi) and returns the binary's path.
func buildCommand(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, "pesto/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build pesto/%s: %v\n%s", name, err, out)
	}
	return bin
}

// Package servicetest is the test kit that the services' tests share: a log
// buffer, an environment from a map, polling with a deadline, and running
// the test binary as the service's real main in a child process.
//
// It is imported by _test.go files only.
package servicetest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects a service's log lines for assertions; safe for
// concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Env returns a lookup over m in the shape of os.LookupEnv, which is what
// the services' run functions take.
func Env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// Merge returns a new map with base's entries and then over's on top.
func Merge(base, over map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// PollInterval is how often Poll asks again.
const PollInterval = 20 * time.Millisecond

// Poll calls cond until it returns true, and fails t (naming what) when
// that has not happened within the given time.
func Poll(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(PollInterval)
	}
}

// mainEnv, set in a child started by MainCommand, makes TestMain run the
// service's main with the arguments after "--".
const mainEnv = "PESTO_SERVICETEST_MAIN"

// TestMain is a test package's TestMain: in a child started by MainCommand
// it runs main with the child's arguments and returns when main does;
// otherwise it runs the tests and exits with their status.
//
//	func TestMain(m *testing.M) { servicetest.TestMain(m, main) }
func TestMain(m *testing.M, main func()) {
	if os.Getenv(mainEnv) == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{os.Args[0]}, os.Args[i+1:]...)
				break
			}
		}
		main()
		return
	}
	code := m.Run()
	atExit.Lock()
	for _, f := range atExit.funcs {
		f()
	}
	atExit.Unlock()
	os.Exit(code)
}

var atExit struct {
	sync.Mutex
	funcs []func()
}

// AtExit has TestMain call f after the tests, before the process exits:
// for what outlives any one test, such as redistest's spare nodes.
func AtExit(f func()) {
	atExit.Lock()
	defer atExit.Unlock()
	atExit.funcs = append(atExit.funcs, f)
}

// MainCommand returns a command that runs the test binary as the service's
// real main (see TestMain) with args, in an environment of PATH and env
// only. The caller sets its output and starts it.
func MainCommand(env map[string]string, args ...string) *exec.Cmd {
	cmd := SelfCommand(append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = []string{mainEnv + "=1", "PATH=" + os.Getenv("PATH")}
	if e := os.Getenv(EmulatorEnv); e != "" {
		cmd.Env = append(cmd.Env, EmulatorEnv+"="+e)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	return cmd
}

// EmulatorEnv names the emulator that runs this test binary when it is
// built for another architecture (make test-arm64: qemu-aarch64-static,
// through go test -exec). A process under qemu-user cannot start a binary
// of its own architecture by itself, so SelfCommand starts the child
// through the emulator too.
const EmulatorEnv = "PESTO_TEST_EMULATOR"

// SelfCommand returns a command that runs this test binary again with
// args, through the emulator of EmulatorEnv when it is set.
func SelfCommand(args ...string) *exec.Cmd {
	if e := os.Getenv(EmulatorEnv); e != "" {
		return exec.Command(e, append([]string{os.Args[0]}, args...)...)
	}
	return exec.Command(os.Args[0], args...)
}

// Do sends req with c and returns the answer's status, whole body and
// header. A request that fails, or a body that cannot be read, fails t.
func Do(t testing.TB, c *http.Client, req *http.Request) (status int, body string, header http.Header) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return res.StatusCode, string(b), res.Header
}

// LegacyFixtures is the folder of the legacy records' golden samples (the
// wire format's test data), from a service module's folder.
const LegacyFixtures = "../shared/wire/testdata/"

// Fixture decodes the JSON file at path into v; a file that is missing or
// does not decode fails t.
func Fixture(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

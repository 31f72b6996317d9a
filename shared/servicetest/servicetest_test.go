package servicetest_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pesto/shared/servicetest"
)

// main of this package's test binary when run as a child: it prints its
// arguments and one variable, and exits with the code the first argument names.
func childMain() {
	fmt.Printf("args=%q GREETING=%s\n", os.Args[1:], os.Getenv("GREETING"))
	if len(os.Args) > 1 && os.Args[1] == "fail" {
		os.Exit(3)
	}
}

func TestMain(m *testing.M) { servicetest.TestMain(m, childMain) }

func TestMainCommandRunsMain(t *testing.T) {
	for _, c := range []struct {
		name     string
		args     []string
		wantOut  string
		wantCode int
	}{
		{"ok", []string{"version", "-x"}, "args=[\"version\" \"-x\"] GREETING=hi\n", 0},
		{"exit code", []string{"fail"}, "args=[\"fail\"] GREETING=hi\n", 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := servicetest.MainCommand(map[string]string{"GREETING": "hi"}, c.args...)
			var out bytes.Buffer
			cmd.Stdout = &out
			_ = cmd.Run()
			if got := cmd.ProcessState.ExitCode(); got != c.wantCode {
				t.Errorf("exit code %d, want %d", got, c.wantCode)
			}
			if out.String() != c.wantOut {
				t.Errorf("output %q, want %q", out.String(), c.wantOut)
			}
		})
	}
}

func TestEnvAndMerge(t *testing.T) {
	base := map[string]string{"A": "1", "B": "2"}
	got := servicetest.Merge(base, map[string]string{"B": "3", "C": ""})
	if len(base) != 2 || base["B"] != "2" {
		t.Fatalf("Merge changed its base: %v", base)
	}
	env := servicetest.Env(got)
	for _, c := range []struct {
		key, want string
		ok        bool
	}{{"A", "1", true}, {"B", "3", true}, {"C", "", true}, {"D", "", false}} {
		if v, ok := env(c.key); v != c.want || ok != c.ok {
			t.Errorf("env(%q) = %q, %v; want %q, %v", c.key, v, ok, c.want, c.ok)
		}
	}
}

func TestLogBufferConcurrent(t *testing.T) {
	var b servicetest.LogBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintln(&b, "line")
			}
		}()
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != 800 {
		t.Fatalf("%d lines, want 800", got)
	}
}

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f) // stands for runtime.Goexit: Poll must not go on
}

func TestPoll(t *testing.T) {
	var n atomic.Int32
	servicetest.Poll(t, 5*time.Second, "third call", func() bool { return n.Add(1) == 3 })
	if n.Load() != 3 {
		t.Fatalf("cond called %d times, want 3", n.Load())
	}

	ft := &fakeT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != ft {
				t.Fatalf("recovered %v", r)
			}
		}()
		servicetest.Poll(ft, 50*time.Millisecond, "never", func() bool { return false })
	}()
	if want := "never: not within 50ms"; ft.failed != want {
		t.Fatalf("failure %q, want %q", ft.failed, want)
	}
}

func TestDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen", r.Header.Get("X-Pesto-Token"))
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"message":"Monthly limit exceeded"}`))
	}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Pesto-Token", "k")
	status, body, header := servicetest.Do(t, srv.Client(), req)
	if status != 429 || body != `{"message":"Monthly limit exceeded"}` || header.Get("X-Seen") != "k" {
		t.Fatalf("got %d %q %v", status, body, header)
	}
}

func TestFixture(t *testing.T) {
	var f struct {
		Cases []struct {
			Raw string `json:"raw"`
		} `json:"cases"`
	}
	servicetest.Fixture(t, "../wire/testdata/waiting-list.json", &f)
	if len(f.Cases) == 0 || !strings.Contains(f.Cases[0].Raw, `"email"`) {
		t.Fatalf("cases %+v", f.Cases)
	}
}

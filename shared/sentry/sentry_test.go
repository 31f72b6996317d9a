package sentry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	got := make(chan *http.Request, 10)
	bodies := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- string(b)
	}))
	defer srv.Close()
	dsn := strings.Replace(srv.URL, "http://", "http://publickey@", 1) + "/42"
	parsed, err := ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	r := New(parsed, "auth", "test", "v1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Report(errors.New("corrupt token record"), map[string]string{"route": "/"})
	r.Report(errors.New("corrupt token record"), map[string]string{"route": "/"}) // within quiet: dropped
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.Close(ctx)

	req := <-got
	if len(got) != 0 {
		t.Fatal("a repeated report was sent")
	}
	if req.URL.Path != "/api/42/envelope/" || !strings.Contains(req.Header.Get("X-Sentry-Auth"), "sentry_key=publickey") {
		t.Fatalf("request %s %v", req.URL.Path, req.Header)
	}
	lines := strings.Split(strings.TrimSuffix(<-bodies, "\n"), "\n")
	if len(lines) != 3 || lines[1] != `{"type":"event"}` {
		t.Fatalf("envelope %q", lines)
	}
	var ev event
	if err := json.Unmarshal([]byte(lines[2]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Message != "corrupt token record" || ev.Environment != "test" || ev.Logger != "auth" || ev.Release != "auth@v1" ||
		ev.Tags["route"] != "/" || len(ev.EventID) != 32 || ev.Level != "error" {
		t.Fatalf("event %+v", ev)
	}
}

func TestNilReporter(t *testing.T) {
	dsn, err := ParseDSN("")
	if err != nil || dsn != (DSN{}) {
		t.Fatal(dsn, err)
	}
	r := New(dsn, "auth", "test", "v1", nil)
	if r != nil {
		t.Fatal(r)
	}
	r.Report(errors.New("x"), nil) // no-op
	r.Close(context.Background())
}

func TestParseDSN(t *testing.T) {
	for _, c := range []struct{ dsn, endpoint, key string }{
		{"https://pub@o1.ingest.sentry.io/42", "https://o1.ingest.sentry.io/api/42/envelope/", "pub"},
		{"http://pub:secret@localhost:9000/sub/path/7", "http://localhost:9000/sub/path/api/7/envelope/", "pub"},
	} {
		got, err := ParseDSN(c.dsn)
		if err != nil || got.endpoint != c.endpoint || got.key != c.key || got.raw != c.dsn {
			t.Errorf("ParseDSN(%q) = %+v, %v", c.dsn, got, err)
		}
	}
	for _, bad := range []string{"https://host/1", "https://key@host/", "::", "ftp://k@h/1", "https://k@/1"} {
		if got, err := ParseDSN(bad); err == nil || got != (DSN{}) {
			t.Errorf("%q accepted: %+v", bad, got)
		} else if strings.Contains(err.Error(), bad) {
			t.Errorf("%q: error quotes the DSN: %v", bad, err)
		}
	}
}

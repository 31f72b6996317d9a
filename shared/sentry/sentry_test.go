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
	r, err := New(dsn, "auth", "test", "v1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
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
	r, err := New("", "auth", "test", "v1", nil)
	if r != nil || err != nil {
		t.Fatal(r, err)
	}
	r.Report(errors.New("x"), nil) // no-op
	r.Close(context.Background())
	for _, bad := range []string{"https://host/1", "https://key@host/", "::"} {
		if _, err := New(bad, "auth", "test", "v1", nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

package redistest

import "testing"

func TestStartDoRestart(t *testing.T) {
	s := Start(t)
	if got := s.Do("SET", "k", "v"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := s.Do("GET", "k"); got != "v" {
		t.Fatalf("GET: %q", got)
	}
	if got := s.Do("INCR", "n"); got != "1" {
		t.Fatalf("INCR: %q", got)
	}
	if got := s.Do("GET", "missing"); got != "" {
		t.Fatalf("GET missing: %q", got)
	}
	s.Stop()
	if ping(s.Addr) == nil {
		t.Fatal("still answering after Stop")
	}
	s.Restart()
	if got := s.Do("GET", "k"); got != "" {
		t.Fatalf("data survived a restart: %q", got)
	}
}

package redistest

import (
	"pesto/shared/servicetest"
	"strings"
	"testing"
	"time"
)

func TestStandalone(t *testing.T) {
	s := StartStandalone(t)
	exercise(t, s)
	s.Stop()
	if ping(s.Addr) == nil {
		t.Fatal("still answering after Stop")
	}
	s.Restart()
	if got := s.Do("GET", "k"); got != "" {
		t.Fatalf("data survived a restart: %q", got)
	}
}

func TestCluster(t *testing.T) {
	s := StartCluster(t)
	if !s.Cluster || strings.Count(s.URL, "addr=") != 2 {
		t.Fatalf("URL %q", s.URL)
	}
	exercise(t, s)
	// Keys land on different masters.
	for i := 0; i < 20; i++ {
		s.Do("SET", "key"+string(rune('a'+i)), "v")
	}
	for _, n := range s.nodes {
		if cli(n.addr, "DBSIZE") == "0\n" {
			t.Errorf("node %s holds no key", n.addr)
		}
	}
	if got := s.Keys("key*"); len(got) != 20 || got[0] != "keya" {
		t.Fatalf("Keys: %q", got)
	}
	s.Restart()
	if got := s.Do("GET", "k"); got != "" {
		t.Fatalf("data survived a restart: %q", got)
	}
	exercise(t, s)
}

func exercise(t *testing.T, s *Server) {
	t.Helper()
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
	s.Do("RPUSH", "l", "a", "b")
	if got := s.DoList("LRANGE", "l", "0", "-1"); len(got) != 2 || got[1] != "b" {
		t.Fatalf("LRANGE: %q", got)
	}
	if got := s.Do("LRANGE", "l", "0", "-1"); got != "a\nb" {
		t.Fatalf("LRANGE as Do: %q", got)
	}
}

func TestSentinelFailover(t *testing.T) {
	s := StartSentinel(t)
	if got := s.MasterAddr(); got != s.Master.Addr {
		t.Fatalf("master %q, want %q", got, s.Master.Addr)
	}
	s.Master.Do("SET", "k", "v")
	// Replication is asynchronous.
	servicetest.Poll(t, 10*time.Second, "replicated", func() bool { return cli(s.Replica.Addr, "GET", "k") == "v\n" })
	s.Failover()
	servicetest.Poll(t, 20*time.Second, "failover", func() bool { return s.MasterAddr() == s.Replica.Addr })
	// A fresh connection: the promotion may drop the ones the replica had.
	if got := cli(s.Replica.Addr, "GET", "k"); got != "v\n" {
		t.Fatalf("promoted replica has %q", got)
	}
}

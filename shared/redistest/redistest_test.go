package redistest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"pesto/shared/servicetest"
)

// TestMain stops the spare cluster nodes when the tests are done.
func TestMain(m *testing.M) { servicetest.TestMain(m, func() {}) }

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

// spareChildEnv, set, makes TestSparesEndWithTheProcess the child process
// it starts: it takes a cluster, prints every node's address and the spares'
// directory, and ends as the variable says: "return" through TestMain, or
// "exit" at once, cleaning nothing up (as a test binary killed by -timeout).
const spareChildEnv = "PESTO_REDISTEST_SPARE_CHILD"

func TestSparesEndWithTheProcess(t *testing.T) {
	if how := os.Getenv(spareChildEnv); how != "" {
		s := StartCluster(t)
		exercise(t, s)
		spares.Lock()
		fmt.Println("root", spares.root)
		for _, c := range spares.clusters {
			<-c.done
			for _, n := range append(c.nodes, s.nodes...) {
				fmt.Println("node", n.addr)
			}
		}
		spares.Unlock()
		if how == "exit" {
			os.Exit(0)
		}
		return
	}
	for _, how := range []string{"return", "exit"} {
		t.Run(how, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSparesEndWithTheProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), spareChildEnv+"="+how)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var root string
			var addrs []string
			for _, line := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(line, "root "); ok {
					root = v
				} else if v, ok := strings.CutPrefix(line, "node "); ok {
					addrs = append(addrs, v)
				}
			}
			if root == "" || len(addrs) < 3*(1+sparesAhead) {
				t.Fatalf("child printed %d nodes:\n%s", len(addrs), out)
			}
			for _, addr := range addrs {
				servicetest.Poll(t, 10*time.Second, addr+" gone", func() bool { return ping(addr) != nil })
			}
			if _, err := os.Stat(root); how == "return" && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the spares' directory %s: %v", root, err)
			}
			if how == "exit" {
				os.RemoveAll(root)
			}
		})
	}
}

// A node whose port another process holds ends at once, and ready says so
// at once (errExited), rather than after its 10 s: a spare cluster's node
// is then started again on another port (respawnSpare).
func TestNodeWhosePortIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	n := &node{port: port, addr: "127.0.0.1:" + strconv.Itoa(port), dir: t.TempDir()}
	n.cmd = n.command()
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.stop()
	start := time.Now()
	if err := n.ready(); !errors.Is(err, errExited) || time.Since(start) > 5*time.Second {
		t.Fatalf("ready: %v after %v, want errExited at once", err, time.Since(start))
	}
}

package redistest

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// KillClients closes every client connection of every node, as an
// operator's CLIENT KILL does; the nodes go on serving.
func (s *Server) KillClients() {
	s.t.Helper()
	for _, n := range s.nodes {
		for _, kind := range []string{"normal", "pubsub"} {
			if out := cli(n.addr, "CLIENT", "KILL", "TYPE", kind); out == "" {
				s.t.Fatalf("CLIENT KILL TYPE %s on %s failed", kind, n.addr)
			}
		}
	}
}

// StartClusterWithReplica starts a three-master cluster whose first master
// has a replica, which Failover promotes.
func StartClusterWithReplica(t testing.TB) *Server {
	t.Helper()
	s := StartCluster(t)
	r := &node{port: FreePort(t), dir: t.TempDir(), args: clusterArgs}
	r.addr = "127.0.0.1:" + strconv.Itoa(r.port)
	r.start(t)
	s.nodes = append(s.nodes, r) // stopped with the others
	s.replica = len(s.nodes) - 1
	master := s.nodes[0]
	if out := cli(r.addr, "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(master.port)); !strings.Contains(out, "OK") {
		t.Fatalf("CLUSTER MEET: %q", out)
	}
	id := strings.TrimSpace(cli(master.addr, "CLUSTER", "MYID"))
	s.waitFor(20*time.Second, "the replica attached to its master", func() bool {
		// Refused until the gossip has told the new node of the master.
		return strings.Contains(cli(r.addr, "CLUSTER", "REPLICATE", id), "OK") ||
			strings.Contains(cli(r.addr, "INFO", "replication"), "master_link_status:up")
	})
	s.waitFor(20*time.Second, "the replica in sync", func() bool {
		return strings.Contains(cli(r.addr, "INFO", "replication"), "master_link_status:up")
	})
	s.waitClusterOK()
	return s
}

// Failover promotes the first master's replica (CLUSTER FAILOVER, the
// manual failover an operator runs before maintenance) and returns once
// every node sees it as the master and the cluster serves. The old master
// becomes the replica: a second Failover swaps them back.
func (s *Server) Failover() {
	s.t.Helper()
	if s.replica == 0 {
		s.t.Fatal("Failover needs StartClusterWithReplica")
	}
	replica, master := s.nodes[s.replica], s.nodes[0]
	if out := cli(replica.addr, "CLUSTER", "FAILOVER"); !strings.Contains(out, "OK") {
		s.t.Fatalf("CLUSTER FAILOVER: %q", out)
	}
	id := strings.TrimSpace(cli(replica.addr, "CLUSTER", "MYID"))
	s.waitFor(20*time.Second, "the replica promoted, as every node sees it", func() bool {
		for _, n := range s.nodes {
			if !isMaster(cli(n.addr, "CLUSTER", "NODES"), id) {
				return false
			}
		}
		return strings.HasPrefix(cli(master.addr, "ROLE"), "slave")
	})
	s.waitClusterOK()
	s.nodes[0], s.nodes[s.replica] = replica, master
}

// isMaster reports whether CLUSTER NODES output lists node id as a master.
func isMaster(nodes, id string) bool {
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == id {
			return strings.Contains(f[2], "master")
		}
	}
	return false
}

// waitFor polls cond until it holds, or fails the test after within.
func (s *Server) waitFor(within time.Duration, what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

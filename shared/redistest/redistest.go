// Package redistest starts real Redis servers on free loopback ports for a
// test and stops them when the test ends: a standalone redis-server, a
// three-master Redis Cluster, or a master, a replica and a Sentinel. A
// missing redis-server fails the test; it is never skipped. A cluster's
// nodes are started ahead, while earlier tests run (see spares); a package
// whose tests start clusters uses servicetest.TestMain, which stops the
// spares left when its tests are done.
//
// Start gives a standalone server, or a cluster when the environment has
// PESTO_REDIS=cluster, so that one suite runs against both (make test does).
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// ModeEnv names the variable that selects what Start starts: "cluster" for
// a Redis Cluster, anything else for a standalone server.
const ModeEnv = "PESTO_REDIS"

// Server is a Redis deployment owned by one test: one node, or the masters
// of a cluster.
type Server struct {
	t     testing.TB
	Port  int    // the first node's port
	Addr  string // the first node's 127.0.0.1:port
	URL   string // REDIS_URL for the services: every node of a cluster
	nodes []*node
	// Cluster is true for a Redis Cluster.
	Cluster bool
	// replica is the index in nodes of the first master's replica
	// (StartClusterWithReplica), or 0.
	replica int
	cli     rueidis.Client // for Do, made on first use
}

type node struct {
	port int
	addr string
	dir  string
	args []string
	cmd  *exec.Cmd
}

// clusterArgs make a redis-server a cluster node.
var clusterArgs = []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"}

// Start starts a Redis with no persistence for the test: a standalone
// server, or a three-master cluster when PESTO_REDIS=cluster. Extra args
// are passed to every redis-server.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	if os.Getenv(ModeEnv) == "cluster" {
		return StartCluster(t, args...)
	}
	return StartStandalone(t, args...)
}

// StartStandalone starts one redis-server whatever PESTO_REDIS says.
func StartStandalone(t testing.TB, args ...string) *Server {
	t.Helper()
	s := newServer(t, 1, args)
	s.URL = "redis://" + s.Addr
	s.startNodes()
	return s
}

// StartCluster starts a Redis Cluster of three masters (no replicas). With
// no extra args it is made of spare nodes, started while earlier tests ran
// (see spares).
func StartCluster(t testing.TB, args ...string) *Server {
	t.Helper()
	if len(args) == 0 {
		s := fromSpares(t)
		s.meet()
		return s
	}
	s := newServer(t, 3, append(slices.Clone(clusterArgs), args...))
	s.setCluster()
	s.startNodes()
	return s
}

// setCluster marks s, whose nodes are known, a cluster.
func (s *Server) setCluster() {
	s.Cluster = true
	s.URL = "redis://" + s.nodes[0].addr + "?addr=" + s.nodes[1].addr + "&addr=" + s.nodes[2].addr
}

func newServer(t testing.TB, n int, args []string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (apt-get install redis-server): %v", err)
	}
	s := &Server{t: t}
	for i := 0; i < n; i++ {
		port := FreePort(t)
		s.nodes = append(s.nodes, &node{port: port, addr: "127.0.0.1:" + strconv.Itoa(port), dir: t.TempDir(), args: args})
	}
	s.Port, s.Addr = s.nodes[0].port, s.nodes[0].addr
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) startNodes() {
	s.t.Helper()
	formed := s.Cluster && fileExists(filepath.Join(s.nodes[0].dir, "nodes.conf"))
	for _, n := range s.nodes {
		n.start(s.t)
	}
	if !s.Cluster {
		return
	}
	if formed {
		// A restart: the nodes remember the cluster (nodes.conf).
		s.waitClusterOK()
		return
	}
	s.formCluster()
}

// formCluster makes a cluster of nodes that have just started, each knowing
// only itself, and waits for it to serve. By hand: redis-cli --cluster
// create waits whole seconds between its steps.
func (s *Server) formCluster() {
	s.t.Helper()
	if err := assignSlots(s.nodes); err != nil {
		s.t.Fatal(err)
	}
	s.meet()
}

// assignSlots gives each node its share of the slots.
func assignSlots(nodes []*node) error {
	per := 16384 / len(nodes)
	for i, n := range nodes {
		first, last := i*per, (i+1)*per-1
		if i == len(nodes)-1 {
			last = 16383
		}
		if out := cli(n.addr, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(first), strconv.Itoa(last)); !strings.Contains(out, "OK") {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE on %s: %q", n.addr, out)
		}
	}
	return nil
}

// meet introduces the nodes, which hold their slots, to each other and
// waits for the cluster to serve. Every pair meets at once, so that no node
// waits for gossip to learn of another's slots.
func (s *Server) meet() {
	s.t.Helper()
	for i, a := range s.nodes {
		for _, b := range s.nodes[i+1:] {
			if out := cli(a.addr, "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(b.port)); !strings.Contains(out, "OK") {
				s.t.Fatalf("CLUSTER MEET %s %s: %q", a.addr, b.addr, out)
			}
		}
	}
	s.waitClusterOK()
}

func (s *Server) waitClusterOK() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range s.nodes {
		for !strings.Contains(cli(n.addr, "CLUSTER", "INFO"), "cluster_state:ok") {
			if time.Now().After(deadline) {
				s.t.Fatalf("cluster not ok within 20s: %s", cli(n.addr, "CLUSTER", "INFO"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (n *node) start(t testing.TB) {
	t.Helper()
	n.cmd = n.command()
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	n.waitReady(t)
}

func (n *node) command() *exec.Cmd {
	args := append([]string{
		"--port", strconv.Itoa(n.port), "--bind", "127.0.0.1", "--dir", n.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--logfile", "", "--loglevel", "warning",
	}, n.args...)
	return exec.Command("redis-server", args...)
}

// waitReady waits for the node, started, to answer PING.
func (n *node) waitReady(t testing.TB) {
	t.Helper()
	if err := n.ready(); err != nil {
		t.Fatal(err)
	}
}

func (n *node) ready() error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ping(n.addr) == nil {
			return nil
		}
		if n.exited() {
			return fmt.Errorf("redis-server on %s: %w", n.addr, errExited)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer PING within 10s", n.addr)
}

// errExited: a node's redis-server ended before it answered (another
// process took its port between FreePort and its bind).
var errExited = errors.New("exited before it answered")

// exited reports whether the node's process has ended (a zombie, not yet
// waited for).
func (n *node) exited() bool {
	if n.cmd == nil || n.cmd.Process == nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(n.cmd.Process.Pid) + "/stat")
	if err != nil {
		return false // no /proc: the deadline decides
	}
	i := bytes.LastIndexByte(stat, ')') // the command may hold spaces and parentheses
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// Stop kills every node and waits for them to exit. Stopping twice is fine.
func (s *Server) Stop() {
	s.signal(syscall.SIGCONT) // a frozen node cannot die
	if s.cli != nil {
		s.cli.Close()
		s.cli = nil
	}
	for _, n := range s.nodes {
		n.stop()
	}
}

// Freeze stops every node without closing its connections (SIGSTOP): a
// Redis that hangs. Thaw resumes them.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes the nodes after Freeze.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	for _, n := range s.nodes {
		if n.cmd != nil {
			if err := n.cmd.Process.Signal(sig); err != nil {
				s.t.Fatalf("signal %v to redis-server: %v", sig, err)
			}
		}
	}
}

// Restart starts the deployment again on the same ports (after Stop): with
// empty data unless it was started with persistence (--appendonly yes); a
// cluster's nodes rejoin as they were.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.startNodes()
}

// Client returns a client to the deployment (cluster-aware), closed when
// the test ends.
func (s *Server) Client() rueidis.Client {
	s.t.Helper()
	c, err := rueidis.NewClient(s.options())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(c.Close)
	return c
}

func (s *Server) options() rueidis.ClientOption {
	opt := rueidis.ClientOption{DisableCache: true}
	for _, n := range s.nodes {
		opt.InitAddress = append(opt.InitAddress, n.addr)
	}
	return opt
}

// keyless commands take no key as their first argument.
var keyless = map[string]bool{
	"PING": true, "FLUSHALL": true, "FLUSHDB": true, "DBSIZE": true, "INFO": true, "CONFIG": true,
	"CLIENT": true, "SCRIPT": true, "KEYS": true, "SCAN": true, "SENTINEL": true, "DEBUG": true, "CLUSTER": true,
}

// Do runs one command and returns its reply as a string: "" for nil, the
// decimal for an integer, and elements joined by "\n" for an array. It fails
// the test on an error reply. The first argument after the command is taken
// as the key (routing in a cluster) unless the command takes none.
func (s *Server) Do(args ...string) string {
	s.t.Helper()
	msg, err := s.do(args)
	if rueidis.IsRedisNil(err) {
		return ""
	}
	if err != nil {
		s.t.Fatalf("%v: %v", args, err)
	}
	return format(msg)
}

// DoList runs a command whose reply is an array of strings (LRANGE, KEYS…).
func (s *Server) DoList(args ...string) []string {
	s.t.Helper()
	msg, err := s.do(args)
	if err != nil && !rueidis.IsRedisNil(err) {
		s.t.Fatalf("%v: %v", args, err)
	}
	list, _ := msg.AsStrSlice()
	return list
}

// Keys returns the keys matching pattern on every node, sorted: KEYS
// itself sees only one node of a cluster.
func (s *Server) Keys(pattern string) []string {
	s.t.Helper()
	s.client()
	var keys []string
	for addr, node := range s.cli.Nodes() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, err := node.Do(ctx, node.B().Keys().Pattern(pattern).Build()).AsStrSlice()
		cancel()
		if err != nil {
			s.t.Fatalf("KEYS on %s: %v", addr, err)
		}
		keys = append(keys, list...)
	}
	slices.Sort(keys)
	return keys
}

func (s *Server) client() {
	if s.cli == nil {
		c, err := rueidis.NewClient(s.options())
		if err != nil {
			s.t.Fatal(err)
		}
		s.cli = c
	}
}

func (s *Server) do(args []string) (rueidis.RedisMessage, error) {
	msg, err := s.doOnce(args)
	if _, reply := rueidis.IsRedisErr(err); err != nil && !reply {
		// The server dropped the connection (a failover, a restart): once
		// more on a new one.
		s.cli.Close()
		s.cli = nil
		msg, err = s.doOnce(args)
	}
	return msg, err
}

func (s *Server) doOnce(args []string) (rueidis.RedisMessage, error) {
	s.client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var cmd rueidis.Completed
	if len(args) > 1 && !keyless[strings.ToUpper(args[0])] {
		cmd = s.cli.B().Arbitrary(args[0]).Keys(args[1]).Args(args[2:]...).Build()
	} else {
		cmd = s.cli.B().Arbitrary(args...).Build()
	}
	return s.cli.Do(ctx, cmd).ToMessage()
}

func format(msg rueidis.RedisMessage) string {
	if v, err := msg.AsInt64(); err == nil && !msg.IsString() {
		return strconv.FormatInt(v, 10)
	}
	if v, err := msg.ToString(); err == nil {
		return v
	}
	if list, err := msg.ToArray(); err == nil {
		parts := make([]string, len(list))
		for i, m := range list {
			parts[i] = format(m)
		}
		return strings.Join(parts, "\n")
	}
	return fmt.Sprint(msg)
}

// Sentinel is a master, one replica and one Sentinel watching them as
// "mymaster".
type Sentinel struct {
	t       testing.TB
	Master  *Server
	Replica *Server
	Addr    string // the Sentinel's 127.0.0.1:port
	URL     string // REDIS_URL for the services, through the Sentinel
	node    *node
}

// StartSentinel starts a master, a replica of it, and a Sentinel that fails
// over after a second of silence.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	master := StartStandalone(t)
	replica := newServer(t, 1, []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port)})
	replica.URL = "redis://" + replica.Addr
	replica.startNodes()

	port := FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n"+
		"sentinel parallel-syncs mymaster 1\n", port, dir, master.Port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &node{port: port, addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir}
	n.cmd = exec.Command("redis-server", conf, "--sentinel", "--loglevel", "warning", "--logfile", "")
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(n.stop)
	s := &Sentinel{t: t, Master: master, Replica: replica, Addr: n.addr, URL: "redis://" + n.addr + "?master_set=mymaster", node: n}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(cli(n.addr, "SENTINEL", "REPLICAS", "mymaster"), replica.Addr[len("127.0.0.1:"):]) ||
		!strings.Contains(cli(replica.Addr, "INFO", "replication"), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatalf("sentinel does not see the replica within 20s: %s", cli(n.addr, "SENTINEL", "REPLICAS", "mymaster"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// MasterAddr asks the Sentinel which node is the master now.
func (s *Sentinel) MasterAddr() string {
	out := strings.Fields(cli(s.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"))
	if len(out) != 2 {
		return ""
	}
	return out[0] + ":" + out[1]
}

// Failover makes the Sentinel promote the replica now.
func (s *Sentinel) Failover() {
	s.t.Helper()
	if out := cli(s.Addr, "SENTINEL", "FAILOVER", "mymaster"); !strings.Contains(out, "OK") {
		s.t.Fatalf("SENTINEL FAILOVER: %s", out)
	}
}

// cli runs redis-cli against addr and returns its output ("" on error).
func cli(addr string, args ...string) string {
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// ping sends PING over a raw connection and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("ping: %q", line)
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"pesto/shared/servicetest"
)

// spares are clusters' nodes started, and given their slots, ahead of the
// tests that will take them. A cluster master answers CLUSTERDOWN for its
// first two seconds whatever its slots (Redis's CLUSTER_WRITABLE_DELAY),
// and for a cluster-node-timeout after it last had no slots (it counts
// itself in a minority of a cluster of none); those waits were most of a
// cluster test's time. A spare spends them while earlier tests run, and a
// test only has the nodes meet.
//
// A spare belongs to no test until taken, so it is made to die with the
// process (Pdeathsig, from an OS thread that lives as long as the process:
// the signal follows the thread that started the child), and stopped, its
// directory removed, by servicetest.TestMain's AtExit.
var spares struct {
	sync.Mutex
	clusters []*spareCluster
	root     string // the nodes' directories' parent
	fork     chan func()
}

// sparesAhead is how many spare clusters wait beyond the one a test takes.
const sparesAhead = 2

type spareCluster struct {
	nodes []*node
	done  chan struct{} // closed when each node answers and holds its slots, or err
	err   error
}

// fromSpares returns a Server of three cluster nodes, taken from the
// spares, that hold their slots but have not met; and starts a spare
// cluster in their place.
func fromSpares(t testing.TB) *Server {
	t.Helper()
	spares.Lock()
	if spares.root == "" {
		root, err := os.MkdirTemp("", "redistest-spares-")
		if err != nil {
			spares.Unlock()
			t.Fatal(err)
		}
		spares.root = root
		spares.fork = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives on
			for f := range spares.fork {
				f()
			}
		}()
		servicetest.AtExit(stopSpares)
	}
	for len(spares.clusters) < 1+sparesAhead {
		spares.clusters = append(spares.clusters, startSpareCluster())
	}
	c := spares.clusters[0]
	spares.clusters = slices.Delete(spares.clusters, 0, 1)
	spares.Unlock()

	s := &Server{t: t, nodes: c.nodes}
	for _, n := range s.nodes {
		t.Cleanup(func() { os.RemoveAll(n.dir) }) // after s.Stop: the last cleanup runs first
	}
	t.Cleanup(s.Stop)
	<-c.done
	if c.err != nil {
		t.Fatalf("a spare cluster: %v", c.err)
	}
	s.Port, s.Addr = s.nodes[0].port, s.nodes[0].addr
	s.setCluster()
	return s
}

// startSpareCluster starts three cluster nodes with no extra arguments on
// the forking thread, and gives them their slots in the background.
func startSpareCluster() *spareCluster {
	c := &spareCluster{done: make(chan struct{})}
	for range 3 {
		n, err := startSpare()
		if err != nil {
			c.err = err
			close(c.done)
			return c
		}
		c.nodes = append(c.nodes, n)
	}
	go func() {
		defer close(c.done)
		for _, n := range c.nodes {
			// A node whose port another process took meanwhile is started
			// again on another.
			for try := 0; ; try++ {
				if c.err = n.ready(); c.err == nil || !errors.Is(c.err, errExited) || try == 2 {
					break
				}
				if c.err = respawnSpare(n); c.err != nil {
					break
				}
			}
			if c.err != nil {
				return
			}
		}
		c.err = assignSlots(c.nodes)
	}()
	return c
}

func startSpare() (*node, error) {
	dir, err := os.MkdirTemp(spares.root, "node-")
	if err != nil {
		return nil, err
	}
	n := &node{dir: dir, args: clusterArgs}
	return n, spawnSpare(n)
}

// spawnSpare starts n's redis-server on a free port, on the forking thread.
func spawnSpare(n *node) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	n.port = ln.Addr().(*net.TCPAddr).Port
	n.addr = "127.0.0.1:" + strconv.Itoa(n.port)
	ln.Close()
	cmd := n.command()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error)
	spares.fork <- func() { started <- cmd.Start() }
	if err := <-started; err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	n.cmd = cmd
	return nil
}

// respawnSpare waits for n's ended process and starts it again on another
// port.
func respawnSpare(n *node) error {
	n.stop()
	return spawnSpare(n)
}

// stopSpares stops the spares no test took and removes their directories.
func stopSpares() {
	spares.Lock()
	defer spares.Unlock()
	for _, c := range spares.clusters {
		<-c.done
		for _, n := range c.nodes {
			n.stop()
		}
	}
	spares.clusters = nil
	os.RemoveAll(spares.root)
}

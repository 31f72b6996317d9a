package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyTimeout bounds how long a process may take to answer its readiness
// probe before the harness gives up on it.
const readyTimeout = 10 * time.Second

// supervisor owns every process the harness starts, so that all of them are
// stopped when the run ends, whatever way it ends.
type supervisor struct {
	logDir string

	mu   sync.Mutex
	live map[*proc]struct{}
}

func newSupervisor(logDir string) *supervisor {
	return &supervisor{logDir: logDir, live: map[*proc]struct{}{}}
}

// proc is one started process.
type proc struct {
	name    string
	port    int
	cmd     *exec.Cmd
	logPath string
	started time.Time
	exited  chan struct{} // closed when the process has exited
	waitErr error         // valid after exited is closed
}

// start starts bin, which listens on port, with exactly env as its
// environment (nothing is inherited, so a REDIS_URL of the caller cannot
// leak in), its output going to a log file in the supervisor's directory.
func (s *supervisor) start(name, bin string, port int, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(s.logDir, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	// Should the harness itself be killed outright, the kernel kills its
	// children too instead of leaving servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, port: port, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.mu.Lock()
	s.live[p] = struct{}{}
	s.mu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop kills p and waits for it to exit. Stopping twice is fine.
func (s *supervisor) stop(p *proc) {
	s.mu.Lock()
	delete(s.live, p)
	s.mu.Unlock()
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// stopAll stops every process still running.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	ps := make([]*proc, 0, len(s.live))
	for p := range s.live {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	for _, p := range ps {
		s.stop(p)
	}
}

// logTail returns the last lines of p's output, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "\n")
}

// waitReady polls GET /healthz on p's port until it answers 200 and returns
// the time from the process start until then. It fails when p exits first,
// the deadline passes or ctx is done.
func waitReady(ctx context.Context, p *proc) (time.Duration, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	deadline := time.Now().Add(readyTimeout)
	for {
		if healthy(addr) {
			return time.Since(p.started), nil
		}
		select {
		case <-p.exited:
			return 0, fmt.Errorf("%s exited before it was ready (%v); its output:\n%s", p.name, p.waitErr, p.logTail())
		case <-ctx.Done():
			return 0, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s did not answer /healthz 200 within %s; its output:\n%s", p.name, readyTimeout, p.logTail())
		}
		// Poll often: readiness is measured to the millisecond.
		time.Sleep(500 * time.Microsecond)
	}
}

// healthy reports whether GET /healthz on addr answers 200.
func healthy(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "HTTP/1.1 200 ")
}

// memory is what /proc/<pid>/status says of a process's resident memory.
type memory struct {
	rss, hwm int64 // VmRSS and VmHWM (peak RSS), bytes
	anon     int64 // RssAnon: heap, stacks, runtime; the rest of rss is mostly the mapped binary (RssFile)
}

func readMemory(p *proc) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		case "RssAnon":
			dst = &m.anon
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("%s of %s: %q", key, p.name, val)
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return memory{}, err
	}
	if m.rss == 0 || m.hwm == 0 {
		return memory{}, errors.New("no VmRSS/VmHWM in /proc status of " + p.name)
	}
	return m, nil
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100
// on every Linux this runs on.
const clockTicks = 100

// cpuTime returns the user and system CPU time p has used so far.
func cpuTime(p *proc) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count fields after its ')'.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat of %s: %q", p.cmd.Process.Pid, p.name, b)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15 of stat(5)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat of %s: %w", p.cmd.Process.Pid, p.name, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

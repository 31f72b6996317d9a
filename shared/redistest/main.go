package redistest

import (
	"fmt"
	"os"
	"testing"
)

// StartMain starts a standalone redis-server for a whole test binary, from
// its TestMain: for Example functions, which have no testing.TB to start
// one with. stop kills it and removes its files; a failure to start, or a
// failure of the server's helpers later, ends the binary with exit code 1.
//
//	var exampleRedis *redistest.Server
//
//	func TestMain(m *testing.M) {
//		var stop func()
//		exampleRedis, stop = redistest.StartMain()
//		code := m.Run()
//		stop()
//		os.Exit(code)
//	}
func StartMain() (s *Server, stop func()) {
	tb := &mainTB{}
	s = StartStandalone(tb)
	return s, tb.cleanup
}

// mainTB is the testing.TB of a server started by StartMain: only the
// methods the package calls are implemented.
type mainTB struct {
	testing.TB // nil: any other method panics
	cleanups   []func()
	dirs       []string
}

func (*mainTB) Helper() {}

func (m *mainTB) Fatal(args ...any) { m.fail(fmt.Sprint(args...)) }

func (m *mainTB) Fatalf(format string, args ...any) { m.fail(fmt.Sprintf(format, args...)) }

func (m *mainTB) Errorf(format string, args ...any) { m.fail(fmt.Sprintf(format, args...)) }

func (m *mainTB) fail(msg string) {
	fmt.Fprintln(os.Stderr, "redistest:", msg)
	m.cleanup()
	os.Exit(1)
}

func (m *mainTB) Cleanup(f func()) { m.cleanups = append(m.cleanups, f) }

func (m *mainTB) TempDir() string {
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		m.fail(err.Error())
	}
	m.dirs = append(m.dirs, dir)
	return dir
}

// cleanup runs the cleanups, last first, then removes the directories.
func (m *mainTB) cleanup() {
	for i := len(m.cleanups) - 1; i >= 0; i-- {
		m.cleanups[i]()
	}
	m.cleanups = nil
	for _, d := range m.dirs {
		_ = os.RemoveAll(d)
	}
	m.dirs = nil
}

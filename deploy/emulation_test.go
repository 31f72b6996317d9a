//go:build emulation

package deploy

import (
	"debug/elf"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// TestArm64Auth builds auth for linux/arm64 as its Dockerfile's build stage
// does (on this machine, GOOS/GOARCH from TARGETOS/TARGETARCH), then runs
// that very binary under qemu-user against a real redis-server: its
// version, /healthz through its own healthcheck subcommand (the image's
// HEALTHCHECK), a real key allowed and counted, an unknown one refused,
// and a clean exit on SIGTERM. Run by make test-arm64 (-tags emulation).
func TestArm64Auth(t *testing.T) {
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static is not installed (apt-get install qemu-user-static): %v", err)
	}
	bin := replayBuildStage(t, images[0], map[string]string{"TARGETOS": "linux", "TARGETARCH": "arm64"})
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	machine := f.Machine
	f.Close()
	if machine != elf.EM_AARCH64 {
		t.Fatalf("%s is built for %v, want %v", bin, machine, elf.EM_AARCH64)
	}

	if out, err := exec.Command(qemu, bin, "version").CombinedOutput(); err != nil || string(out) != "auth test\n" {
		t.Fatalf("auth version under qemu: %v %q, want \"auth test\\n\"", err, out)
	}

	rs := redistest.StartStandalone(t)
	port := strconv.Itoa(redistest.FreePort(t))
	env := []string{"PORT=" + port, "REDIS_URL=" + rs.URL, "LOG_LEVEL=warn", "ENVIRONMENT=test", "UNMETERED_EMAILS="}
	cmd := exec.Command(qemu, bin)
	cmd.Env = env
	stop := startProcess(t, cmd)
	waitListening(t, "arm64 auth", net.JoinHostPort("127.0.0.1", port))

	waitFor(t, "arm64 auth healthcheck", func() error {
		c := exec.Command(qemu, bin, "healthcheck")
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})

	const key = "arm64-key-0123456789"
	rs.Do("SET", key, `{"UserEmail":"arm64@example.com","MonthlyLimit":100,"Revoked":false}`)
	url := "http://127.0.0.1:" + port + "/"
	for i := 1; i <= 3; i++ {
		got := do(t, "GET", url, ptr(key))
		answer{status: 200, body: ""}.check(t, got)
		if v := got.header.Get("RateLimit-Remaining"); v != strconv.Itoa(100-i) {
			t.Errorf("call %d: RateLimit-Remaining = %q, want %d", i, v, 100-i)
		}
	}
	if got := rs.Do("GET", wire.CounterKey(time.Now(), "arm64@example.com")); got != "3" {
		t.Errorf("counter = %q after 3 calls, want 3", got)
	}
	denied(401, "Token not registered").check(t, do(t, "GET", url, ptr("arm64-unknown-0123456789")))
	denied(401, "Token must be supplied").check(t, do(t, "GET", url, nil))

	// SIGTERM: a clean exit, code 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stop()
	if !cmd.ProcessState.Exited() || cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("after SIGTERM: %v, want exit 0", cmd.ProcessState)
	}
}

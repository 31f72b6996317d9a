package proof

import (
	"crypto/sha256"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	i := New([]byte("server-secret-0123456789-abcdefghijkl"), 12, clock)
	c := i.Challenge("trial")
	p := Solve(c)
	id, exp, err := i.Verify("trial", p)
	if err != nil || id != strings.Split(c, ".")[2] || !exp.Equal(now.Add(Life).Truncate(time.Second)) {
		t.Fatalf("Verify(own proof) = %q %v %v", id, exp, err)
	}

	unsolved := c + ".0"
	for strings.HasPrefix(unsolved, c) && LeadingZeros(sha256.Sum256([]byte(unsolved))) >= 12 {
		unsolved += "0" // "0" solved it by chance: try another counter
	}
	f := strings.Split(c, ".")
	for name, bad := range map[string]string{
		"another route":  "",
		"no work":        unsolved,
		"fewer bits":     "1." + strings.Join(f[1:], ".") + ".0",
		"later expiry":   f[0] + ".9999999999." + f[2] + "." + f[3] + ".0",
		"another nonce":  f[0] + "." + f[1] + ".AAAAAAAAAAAAAAAAAAAAAA." + f[3] + ".0",
		"malformed":      "x.y",
		"empty":          "",
		"negative count": c + ".-1",
		"too long":       c + "." + strings.Repeat("1", 200),
	} {
		route := "trial"
		if name == "another route" {
			route, bad = "register", p
		}
		if _, _, err := i.Verify(route, bad); err != ErrInvalid {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, _, err := New([]byte("another-secret-0123456789-abcdefghij"), 12, clock).Verify("trial", p); err != ErrInvalid {
		t.Errorf("another server's key: %v", err)
	}
	now = now.Add(Life)
	if _, _, err := i.Verify("trial", p); err != ErrInvalid {
		t.Errorf("expired: %v", err)
	}
	if got := strings.Split(i.Challenge("trial"), ".")[0]; got != strconv.Itoa(12) {
		t.Errorf("bits field %q", got)
	}
}

// BenchmarkSolve is what a proof costs a client written in Go, one core:
// the browser's figure is in the README (TestProofOfWorkInBrowser).
func BenchmarkSolve(b *testing.B) {
	i := New([]byte("server-secret-0123456789-abcdefghijkl"), Bits, time.Now)
	for b.Loop() {
		Solve(i.Challenge("trial"))
	}
}

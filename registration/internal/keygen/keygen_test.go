package keygen

import (
	"strings"
	"testing"
)

// Every character of [A-Za-z0-9] comes out about equally often.
func TestRandomUnbiased(t *testing.T) {
	const n = 620_000
	s := Random(n)
	if len(s) != n {
		t.Fatalf("len %d", len(s))
	}
	counts := map[rune]int{}
	for _, r := range s {
		counts[r]++
	}
	if len(counts) != 62 {
		t.Fatalf("%d distinct characters, want 62", len(counts))
	}
	// Expected 10000 each, σ ≈ 99, bounds at 5σ. Folding bytes 248–255
	// onto the first eight characters (b % 62 without rejection) would
	// give those ~12100.
	for r, c := range counts {
		if c < 9500 || c > 10500 {
			t.Errorf("%q appeared %d times, want about 10000", r, c)
		}
		if !strings.ContainsRune(alphanumeric, r) {
			t.Errorf("%q is not alphanumeric", r)
		}
	}
}

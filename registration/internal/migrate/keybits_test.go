package migrate

import (
	"strings"
	"testing"

	"pesto/registration/internal/keygen"
)

// Keys registration makes are far above MinKeyBits; short keys, words and
// repeats, such as the README's own example, are below it.
func TestKeyBits(t *testing.T) {
	for _, c := range []struct {
		key  string
		weak bool
	}{
		{keygen.Approved(), false},
		{"TRIAL-" + keygen.Random(58), false},
		{"johndoe-key", true},
		{"correcthorsebatterystaple", true},
		{"my-key", true},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("ab12", 64), true},
		{"", true},
	} {
		bits := KeyBits(c.key)
		if got := bits < MinKeyBits; got != c.weak {
			t.Errorf("KeyBits(%.20q…) = %.0f: weak %v, want %v", c.key, bits, got, c.weak)
		}
	}
	if b := KeyBits("johndoe-key"); b < 30 || b > 40 {
		t.Errorf("KeyBits(johndoe-key) = %.1f, want about 34", b)
	}
}

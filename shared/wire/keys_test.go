package wire

import (
	"strings"
	"testing"
)

// TestHashedKeyGolden pins the hashed storage's key names, byte for byte:
// changing them would lose every key stored hashed.
func TestHashedKeyGolden(t *testing.T) {
	var f struct {
		Cases []struct {
			Token string `json:"token"`
			Key   string `json:"key"`
		} `json:"cases"`
	}
	load(t, "hashed-keys.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("no cases in fixture")
	}
	for _, c := range f.Cases {
		if got := HashedKey(c.Token); got != c.Key {
			t.Errorf("HashedKey(%q) = %q, want %q", c.Token, got, c.Key)
		}
		if got := string(AppendHashedKey([]byte("x"), c.Token)); got != "x"+c.Key {
			t.Errorf("AppendHashedKey(%q) = %q", c.Token, got)
		}
		if !IsHashedKey(c.Key) {
			t.Errorf("IsHashedKey(%q) = false", c.Key)
		}
		// A client can never name a hashed key as its token.
		if WellFormedToken(c.Key) || !IsOwnKey(c.Key) {
			t.Errorf("%q is a well-formed token", c.Key)
		}
		if got := StorageHashed.RecordKey(c.Token); got != c.Key {
			t.Errorf("hashed RecordKey = %q", got)
		}
		if got := StoragePlain.RecordKey(c.Token); got != c.Token {
			t.Errorf("plain RecordKey = %q", got)
		}
		if got := StorageHashed.RecordKeys(c.Token); got != [2]string{c.Key, c.Token} {
			t.Errorf("hashed RecordKeys = %q", got)
		}
		if got := StoragePlain.RecordKeys(c.Token); got != [2]string{c.Token, c.Key} {
			t.Errorf("plain RecordKeys = %q", got)
		}
	}
}

func TestIsHashedKey(t *testing.T) {
	for _, name := range []string{
		"", "pesto:key:", "johndoe-key", "pesto:key:hR89ereZq6g0ITpjozLrJhQ32LllorvChvZzkwjNST",
		"pesto:key:hR89ereZq6g0ITpjozLrJhQ32LllorvChvZzkwjNSTg=", "pesto:key:hR89ereZq6g0ITpjozLrJhQ32LllorvChvZzkwjNST+",
		"PESTO:key:hR89ereZq6g0ITpjozLrJhQ32LllorvChvZzkwjNSTg", "counter/2026-11/x",
	} {
		if IsHashedKey(name) {
			t.Errorf("IsHashedKey(%q) = true", name)
		}
	}
}

func TestParseKeyStorage(t *testing.T) {
	for v, want := range map[string]KeyStorage{"plain": StoragePlain, "hashed": StorageHashed} {
		got, ok := ParseKeyStorage(v)
		if !ok || got != want || got.String() != v {
			t.Errorf("ParseKeyStorage(%q) = %v, %v", v, got, ok)
		}
	}
	for _, v := range []string{"", "Hashed", "sha256", " plain"} {
		if _, ok := ParseKeyStorage(v); ok {
			t.Errorf("ParseKeyStorage(%q) accepted", v)
		}
	}
}

func BenchmarkAppendHashedKey(b *testing.B) {
	token := strings.Repeat("k", 64)
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = AppendHashedKey(buf[:0], token)
	}
}

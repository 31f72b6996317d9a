package wire

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
)

func addFixtureSeeds(f *testing.F, name string) {
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		f.Fatal(err)
	}
	var fx struct {
		Cases []struct {
			Raw string `json:"raw"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		f.Fatal(err)
	}
	for _, c := range fx.Cases {
		f.Add(c.Raw)
	}
}

// Any value under a token key decodes or is ErrCorrupt, never panics; what
// decodes survives an Encode round trip; the fast path agrees with the full
// decoder.
func FuzzDecodeTokenRecord(f *testing.F) {
	addFixtureSeeds(f, "token-records.json")
	addFixtureSeeds(f, "rate-records.json")
	f.Fuzz(func(t *testing.T, raw string) {
		rec, err := DecodeTokenRecord(raw)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		back, err := DecodeTokenRecord(string(rec.Encode()))
		if err != nil || back != rec {
			t.Fatalf("round trip of %+v: %+v %v", rec, back, err)
		}
		if fast, ok := decodeCanonical(raw); ok {
			var v struct {
				UserEmail    string
				MonthlyLimit int64
				Revoked      bool
			}
			if json.Unmarshal([]byte(raw), &v) != nil || v.UserEmail != fast.UserEmail || v.MonthlyLimit != fast.MonthlyLimit || v.Revoked != fast.Revoked {
				t.Fatalf("fast path %+v disagrees with encoding/json on %q", fast, raw)
			}
		}
	})
}

func FuzzDecodeSignup(f *testing.F) {
	addFixtureSeeds(f, "waiting-list.json")
	f.Fuzz(func(t *testing.T, raw string) {
		s, err := DecodeSignup(raw)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		back, err := DecodeSignup(string(s.Encode()))
		if err != nil || back != s {
			t.Fatalf("round trip of %+v: %+v %v", s, back, err)
		}
	})
}

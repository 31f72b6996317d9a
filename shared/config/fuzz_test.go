package config

import (
	"errors"
	"strings"
	"testing"
)

// Any REDIS_URL is accepted or refused with an error naming the variable,
// never a panic, and a refused one never shows its password.
func FuzzRedisURL(f *testing.F) {
	for _, s := range []string{
		"redis://localhost:6379", "rediss://u:p@h:1/0", "unix:///tmp/r.sock", "redis://a:1?addr=b:2&addr=c:3",
		"redis://s:26379?master_set=m", "redis://[::1]:6379", "http://x", "redis://:pw@", "redis://h:99999", "%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		e := New(func(k string) (string, bool) {
			if k == "REDIS_URL" {
				return v, true
			}
			return "", false
		})
		c := LoadCommon(e)
		var ce *Error
		if err := e.Err(); err != nil {
			if !errors.As(err, &ce) || ce.Var != "REDIS_URL" {
				t.Fatalf("error %v does not name REDIS_URL", err)
			}
			return
		}
		if strings.TrimSpace(v) != "" && len(c.Redis.InitAddress) == 0 {
			t.Fatalf("%q accepted without an address", v)
		}
	})
}

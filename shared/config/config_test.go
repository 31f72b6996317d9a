package config

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"pesto/shared/sentry"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

func TestKeyStorage(t *testing.T) {
	for v, want := range map[string]wire.KeyStorage{"": wire.StoragePlain, "plain": wire.StoragePlain, "hashed": wire.StorageHashed} {
		e := env(map[string]string{"KEY_STORAGE": v})
		if c := LoadCommon(e); e.Err() != nil || c.KeyStorage != want {
			t.Errorf("KEY_STORAGE=%q: %v %v", v, c.KeyStorage, e.Err())
		}
	}
}

func env(m map[string]string) *Env {
	return New(servicetest.Env(m))
}

func TestLoadCommonDefaults(t *testing.T) {
	e := env(nil)
	c := LoadCommon(e)
	if e.Err() != nil || c.Port != 3000 || c.Environment != "development" || c.LogLevel != slog.LevelInfo ||
		c.ShutdownTimeout != 10*time.Second || c.SentryDSN != (sentry.DSN{}) || c.Redis.InitAddress[0] != "localhost:6379" ||
		c.KeyStorage != wire.StoragePlain {
		t.Fatalf("%+v %v", c, e.Err())
	}
}

func TestRedisURLForms(t *testing.T) {
	for url, check := range map[string]func(c Common) bool{
		"redis://:secret@10.0.0.1:6380/2": func(c Common) bool {
			return c.Redis.InitAddress[0] == "10.0.0.1:6380" && c.Redis.Password == "secret" && c.Redis.SelectDB == 2 &&
				c.RedisURL == "redis://:xxxxx@10.0.0.1:6380/2"
		},
		"rediss://cache.example.com:6379": func(c Common) bool { return c.Redis.TLSConfig != nil },
		"unix:///run/redis.sock":          func(c Common) bool { return c.Redis.InitAddress[0] == "/run/redis.sock" },
		"redis://a:7000?addr=b:7001&addr=c:7002": func(c Common) bool {
			return len(c.Redis.InitAddress) == 3 && c.Redis.InitAddress[2] == "c:7002"
		},
		"redis://s1:26379?master_set=mymaster": func(c Common) bool { return c.Redis.Sentinel.MasterSet == "mymaster" },
	} {
		e := env(map[string]string{"REDIS_URL": url})
		c := LoadCommon(e)
		if e.Err() != nil || !check(c) {
			t.Errorf("%s: %+v %v", url, c.Redis, e.Err())
		}
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	for _, c := range []struct{ name, value string }{
		{"PORT", "-1"}, {"PORT", "http"}, {"REDIS_URL", "http://x"}, {"REDIS_URL", "redis://[::1"},
		{"LOG_LEVEL", "trace"}, {"SHUTDOWN_TIMEOUT", "5"}, {"SENTRY_DSN", "https://sentry.io/1"},
		{"SENTRY_DSN", "ftp://k@h/1"}, {"KEY_STORAGE", "sha256"}, {"KEY_STORAGE", "Hashed"},
	} {
		e := env(map[string]string{c.name: c.value})
		LoadCommon(e)
		var ce *Error
		if !errors.As(e.Err(), &ce) || ce.Var != c.name {
			t.Errorf("%s=%q: got %v", c.name, c.value, e.Err())
		}
	}
}

func TestFirstErrorKept(t *testing.T) {
	e := env(map[string]string{"A": "x", "B": "y"})
	e.Int("A", 0, 0, 1)
	e.Duration("B", 0)
	var ce *Error
	if !errors.As(e.Err(), &ce) || ce.Var != "A" {
		t.Fatal(e.Err())
	}
	if e.IsSet("C") || !e.IsSet("A") {
		t.Fatal("IsSet")
	}
}

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"redis://user:pw@h:1":  "redis://user:xxxxx@h:1",
		"redis://h:1":          "redis://h:1",
		"smtp://u:p%40ss@h:25": "smtp://u:xxxxx@h:25",
	} {
		if got := mask(in); got != want {
			t.Errorf("mask(%q) = %q, want %q", in, got, want)
		}
	}
}

// A per-client rate must be below its global cap, at once and over time,
// at the widest multiple an IPv6 client gets; otherwise the per-client
// variable is named.
func TestRateBelow(t *testing.T) {
	prefixes := []RatePrefix{{64, 1}, {56, 2}, {48, 4}}
	for _, c := range []struct {
		client, global string
		prefixes       []RatePrefix
		ok             bool
		msg            string
	}{
		{"10/h", "100/h", prefixes, true, ""},
		{"5/h", "200/h", prefixes, true, ""},
		{"60/m", "6000/m", prefixes, true, ""},
		{"10/m", "100/h", nil, false, "10/m is not below GLOBAL 100/h, at once and over time: one client could use up every client's allowance"},
		{"25/h", "100/h", prefixes, false, "25/h (100/h for an IPv6 client at 4 times the rate) is not below GLOBAL 100/h, at once and over time: one client could use up every client's allowance"},
		{"24/h", "100/h", prefixes, true, ""},
		{"60/m", "100/s", prefixes, false, ""}, // a burst of 240 against 100
		{"1/s", "3000/h", nil, false, ""},      // 3,600 an hour against 3,000
		{"1000000/s", "1000000/s", nil, false, ""},
		{"100000/s", "1000000/s", prefixes, true, ""},
	} {
		e := env(map[string]string{"CLIENT": c.client, "GLOBAL": c.global})
		e.RateBelow("CLIENT", e.Rate("CLIENT", ""), c.prefixes, "GLOBAL", e.Rate("GLOBAL", ""))
		var ce *Error
		switch err := e.Err(); {
		case c.ok && err != nil:
			t.Errorf("%s under %s: %v", c.client, c.global, err)
		case !c.ok && (!errors.As(err, &ce) || ce.Var != "CLIENT"):
			t.Errorf("%s under %s: %v, want an error naming CLIENT", c.client, c.global, err)
		case c.msg != "" && ce.Msg != c.msg:
			t.Errorf("%s under %s: %q\nwant %q", c.client, c.global, ce.Msg, c.msg)
		}
	}
}

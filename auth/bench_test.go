package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/valyala/fasthttp"

	"pesto/shared/apikey"
	"pesto/shared/metrics"
	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// The decision path through the whole app (router, request metrics, error
// handler, rate headers) on a real Redis, one case per answer that matters
// for speed. Run with -benchmem: allocs/op is the figure to watch, ns/op of
// the cases that reach Redis is mostly the loopback round trip.
//
//	go test -run '^$' -bench Decide -benchmem ./auth
func BenchmarkDecide(b *testing.B) {
	app, store := newBenchApp(b)
	h := app.Handler()
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			var fctx fasthttp.RequestCtx
			prepareBenchRequest(&fctx, c.token)
			call := func() {
				fctx.Response.Reset()
				h(&fctx)
			}
			call() // fills the client-side cache
			call()
			checkBenchCase(b, c, fctx.Response.StatusCode(), store)
			b.ReportAllocs()
			for b.Loop() {
				call()
			}
			if got := fctx.Response.StatusCode(); got != c.status {
				b.Fatalf("got %d after the loop, want %d", got, c.status)
			}
		})
	}
}

// BenchmarkDecideParallel is the allowed call from GOMAXPROCS goroutines at
// once, as under a proxy's many connections: it shows contention (locks,
// shared counters) that the serial benchmark cannot.
func BenchmarkDecideParallel(b *testing.B) {
	app, store := newBenchApp(b)
	h := app.Handler()
	c := benchCases[0]
	var warm fasthttp.RequestCtx
	prepareBenchRequest(&warm, c.token)
	h(&warm)
	warm.Response.Reset()
	h(&warm)
	checkBenchCase(b, c, warm.Response.StatusCode(), store)
	b.ReportAllocs()
	b.SetParallelism(16) // Redis round trips overlap, as with 64 connections
	b.RunParallel(func(pb *testing.PB) {
		var fctx fasthttp.RequestCtx
		prepareBenchRequest(&fctx, c.token)
		for pb.Next() {
			fctx.Response.Reset()
			h(&fctx)
			if fctx.Response.StatusCode() != c.status {
				b.Errorf("got %d, want %d", fctx.Response.StatusCode(), c.status)
				return
			}
		}
	})
}

// Seeded keys of the benchmarks.
const (
	benchAllowed = "bench-allowed-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
	benchOver    = "bench-over-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"
	benchNoRate  = "bench-norate-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
	benchRated   = "bench-rated-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR"
	benchMissing = "bench-missing-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
	overEmail    = "over@example.com"
)

// benchCase is one path of the decision.
type benchCase struct {
	name   string
	token  string
	status int
	cached bool // the record lookup must be a client-side cache hit
}

var benchCases = []benchCase{
	{"allowed cache hit", benchAllowed, 200, true},
	{"allowed, no rate", benchNoRate, 200, true},
	{"over quota", benchOver, 429, true},
	{"over the rate", benchRated, 429, true},
	{"not registered", benchMissing, 401, true},
	{"malformed", "counter/2026-11/someone@example.com", 401, false},
	{"no token", "", 401, false},
}

// newBenchApp is the app as run() builds it, on a real Redis seeded with
// the keys above, metering everyone, with a default rate never reached
// (every call is checked against it) that two keys do without: one has
// none, one a rate used up.
func newBenchApp(b *testing.B) (*fiber.App, tokenStore) {
	b.Helper()
	rs := redistest.Start(b)
	now := time.Now().UTC()
	rs.Do("SET", benchAllowed, string(wire.TokenRecord{UserEmail: "allowed@example.com", MonthlyLimit: 1 << 60}.Encode()))
	rs.Do("SET", benchOver, string(wire.TokenRecord{UserEmail: overEmail, MonthlyLimit: 5}.Encode()))
	rs.Do("SET", wire.CounterKey(now, overEmail), "5")
	rs.Do("SET", benchNoRate, string(wire.TokenRecord{UserEmail: "norate@example.com", MonthlyLimit: 1 << 60, Rate: wire.Rate{Off: true}}.Encode()))
	rs.Do("SET", benchRated, string(wire.TokenRecord{UserEmail: "rated@example.com", MonthlyLimit: 1 << 60, Rate: wire.Rate{Count: 1, Per: time.Minute}}.Encode()))
	env := map[string]string{"REDIS_URL": rs.URL, "UNMETERED_EMAILS": "", "LOG_LEVEL": "error", "KEY_RATE": "1000000/s"}
	cfg, err := loadConfig(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	rstore := dialStore(b, cfg, log)
	return newApp(log, cfg, rstore, rstore, metrics.NewRegistry(), nil, func() time.Time { return now }), rstore
}

// prepareBenchRequest makes fctx a GET / with the token, as a proxy sends it.
func prepareBenchRequest(fctx *fasthttp.RequestCtx, token string) {
	fctx.Request.Header.SetMethod(fasthttp.MethodGet)
	fctx.Request.SetRequestURI("/")
	fctx.Request.Header.SetHost("auth:3000")
	if token != "" {
		fctx.Request.Header.Set(headerToken, token)
	}
}

// checkBenchCase fails a benchmark that would measure another path than
// its name says: a wrong answer, or a lookup that is not a cache hit.
func checkBenchCase(b *testing.B, c benchCase, status int, store tokenStore) {
	b.Helper()
	if status != c.status {
		b.Fatalf("%s: got %d, want %d", c.name, status, c.status)
	}
	if !c.cached {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, cached, err := store.Record(ctx, c.token)
	if err != nil && !errors.Is(err, apikey.ErrNotFound) {
		b.Fatal(err)
	}
	if !cached {
		b.Fatalf("%s: the record was not served from the client-side cache", c.name)
	}
}

package waitlist

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/apikey"
	"pesto/shared/redisconn"
	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// slowShapes are list elements built to be slow for a scan of the list:
// '@' everywhere, escapes (which a scan must decode), long values.
func slowShape(i int) string {
	switch i % 4 {
	case 0:
		return fmt.Sprintf(`{"name":"User %d","email":"user%d@example.com","building":"a bot that does things","calls":1000}`, i, i)
	case 1:
		return fmt.Sprintf(`{"name":"%s","email":"u%d\u0040example.com","building":"%s","calls":1}`,
			strings.Repeat("@", 100), i, strings.Repeat("u@example.com ", 60))
	case 2:
		return fmt.Sprintf(`{"name":"x","email":"user%d@example.com","building":"%s","calls":1}`, i, strings.Repeat(`\u00e9@`, 140))
	default:
		return fmt.Sprintf(`{"name":"x","email":"  USER%d@Example.COM ","building":null,"calls":5}`, i)
	}
}

// fillList appends n slowShape elements to the waiting list, as an old
// service would (straight RPUSH, no index).
func fillList(tb testing.TB, c rueidis.Client, from, n int) {
	tb.Helper()
	for first := from; first < from+n; first += 1000 {
		cmds := make(rueidis.Commands, 0, 1000)
		for i := first; i < min(first+1000, from+n); i++ {
			cmds = append(cmds, c.B().Rpush().Key(wire.WaitingList).Element(slowShape(i)).Build())
		}
		for _, r := range c.DoMulti(context.Background(), cmds...) {
			if r.Error() != nil {
				tb.Fatal(r.Error())
			}
		}
	}
}

// scriptMicros is the Redis time spent in scripts so far (INFO
// commandstats: EVALSHA and EVAL), in µs.
func scriptMicros(tb testing.TB, c rueidis.Client) float64 {
	tb.Helper()
	info, err := c.Do(context.Background(), c.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		tb.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "cmdstat_evalsha" && name != "cmdstat_eval") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				n, _ := strconv.ParseFloat(v, 64)
				total += n
			}
		}
	}
	return total
}

// rpushScript is the reference: a script that appends without any check,
// the least a signup can cost.
var rpushScript = rueidis.NewLuaScript(`return redis.call('RPUSH', KEYS[1], ARGV[1])`)

// One signup's Redis time with 100,000 listed entries of the shapes a scan
// finds slowest (the target: at most 0.2 ms), against the reference (a bare
// RPUSH script) measured in the same run, and the one pass that indexes a
// list the old services wrote (index-build-ms). Half the signups are of a listed
// person (202), half new (201).
func BenchmarkRegister100k(b *testing.B) {
	rs := redistest.Start(b)
	c := rs.Client()
	fillList(b, c, 0, 100_000)
	conn := redisconn.Dial(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer conn.Close()
	ctx := context.Background()
	// The first signup indexes the list the old services wrote (once).
	build := scriptMicros(b, c)
	if _, err := Register(ctx, conn, wire.Signup{Name: "x", Email: "first@example.com", Calls: 1}, 1<<30); err != nil {
		b.Fatal(err)
	}
	build = scriptMicros(b, c) - build

	const refCalls = 2000
	before := scriptMicros(b, c)
	for i := range refCalls {
		if err := rpushScript.Exec(ctx, c, []string{"pesto:{waiting-list}:bench"}, []string{slowShape(i)}).Error(); err != nil {
			b.Fatal(err)
		}
	}
	ref := (scriptMicros(b, c) - before) / refCalls

	before = scriptMicros(b, c)
	n := 0
	for b.Loop() {
		email := "user" + strconv.Itoa(n%100_000) + "@example.com" // listed
		if n%2 == 1 {
			email = "new" + strconv.Itoa(n) + "@example.com"
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		created, err := Register(rctx, conn, wire.Signup{Name: "x", Email: email, Calls: 1}, 1<<30)
		cancel()
		if err != nil || created != (n%2 == 1) {
			b.Fatal(n, err, created)
		}
		n++
	}
	per := (scriptMicros(b, c) - before) / float64(n)
	b.ReportMetric(per, "redis-µs/signup")
	b.ReportMetric(ref, "ref-redis-µs/rpush")
	b.ReportMetric(per/ref, "x-reference")
	b.ReportMetric(build/1000, "index-build-ms")
}

// A page of GET /api/pending (1,000 signups, from a cursor in the middle)
// reads the same whatever the list holds: B/op at 100,000 listed entries
// against 10,000, in the same run.
func BenchmarkPendingPage(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(strconv.Itoa(n/1000)+"k", func(b *testing.B) {
			rs := redistest.Start(b)
			fillList(b, rs.Client(), 0, n)
			conn := redisconn.Dial(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			defer conn.Close()
			store := New(conn, apikey.Keys{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			ctx := context.Background()
			var cursor string
			for cursor == "" || !strings.HasPrefix(cursor, strconv.Itoa(n/2)+"-") {
				var err error
				if _, cursor, err = store.Pending(ctx, min(1000, n/2), cursor); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				page, _, err := store.Pending(ctx, 1000, cursor)
				if err != nil || len(page) < 1000 {
					b.Fatal(err, len(page))
				}
			}
		})
	}
}

package waitlist

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// A list longer than one step of the index is indexed over several script
// calls within one signup.
func TestIndexLongLegacyList(t *testing.T) {
	rs := redistest.Start(t)
	fillList(t, rs.Client(), 0, 1800)
	conn := dial(t, rs)
	register := func(email string) bool {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		created, err := Register(ctx, conn, wire.Signup{Name: "N", Email: email, Calls: 1}, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		return created
	}
	for _, i := range []int{0, 1, 2, 3, 1799} {
		email := "user" + strconv.Itoa(i) + "@example.com"
		if i%4 == 1 {
			email = "u" + strconv.Itoa(i) + "@example.com"
		}
		if register(email) {
			t.Fatalf("%s: created, want listed already", email)
		}
	}
	if !register("user1800@example.com") {
		t.Fatal("user1800@example.com: not created")
	}
	if got := rs.Do("HGET", PeopleSeenKey, "n"); got != "1801" {
		t.Fatalf("index covers %s elements, want 1801", got)
	}
}

// dial connects to rs (every node of a cluster) for the test.
func dial(t *testing.T, rs *redistest.Server) *redisconn.Conn {
	t.Helper()
	opt, err := rueidis.ParseURL(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	conn := redisconn.Dial(opt, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(conn.Close)
	return conn
}

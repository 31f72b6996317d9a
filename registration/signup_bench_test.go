package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// The duplicate check scans the whole list: one signup against a list of
// 10,000 (the size `make bench` loads).
func BenchmarkRegister10k(b *testing.B) {
	rs := redistest.Start(b)
	c := rs.Client()
	cmds := make(rueidis.Commands, 0, 10000)
	for i := range 10000 {
		cmds = append(cmds, c.B().Rpush().Key(wire.WaitingList).Element(
			fmt.Sprintf(`{"name":"User %d","email":"user%d@example.com","building":"a bot that does things","calls":1000}`, i, i)).Build())
	}
	for _, r := range c.DoMulti(context.Background(), cmds...) {
		if r.Error() != nil {
			b.Fatal(r.Error())
		}
	}
	conn := redisconn.Dial(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer conn.Close()
	known := wire.Signup{Name: "x", Email: "USER9999@example.com", Calls: 1} // the last element
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		created, err := register(ctx, conn, known)
		cancel()
		if err != nil || created {
			b.Fatal(err, created)
		}
	}
}

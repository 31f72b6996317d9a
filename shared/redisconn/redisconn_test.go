package redisconn

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

func TestDialWhileDownThenHeal(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop()
	c := Dial(rueidis.ClientOption{InitAddress: []string{rs.Addr}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer c.Close()
	if _, err := c.Client(); !errors.Is(err, ErrNotConnected) || !Unavailable(err) {
		t.Fatalf("before redis is up: %v", err)
	}
	if err := c.Ping(context.Background(), time.Second); !Unavailable(err) {
		t.Fatalf("ping: %v", err)
	}
	rs.Restart()
	servicetest.Poll(t, 10*time.Second, "connected after redis started", func() bool {
		return c.Ping(context.Background(), time.Second) == nil
	})
	cl, _ := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := cl.Do(ctx, cl.B().Incr().Key("x").Build()).Error()
	if err != nil {
		t.Fatal(err)
	}
	// An error reply about the data is not an outage.
	err = cl.Do(ctx, cl.B().Lpush().Key("x").Element("y").Build()).Error()
	if err == nil || Unavailable(err) {
		t.Fatalf("WRONGTYPE: %v, Unavailable %v", err, Unavailable(err))
	}
	rs.Stop()
	err = cl.Do(ctx, cl.B().Incr().Key("x").Build()).Error()
	if !Unavailable(err) {
		t.Fatalf("after stop: %v", err)
	}
}

func TestCloseWhileConnecting(t *testing.T) {
	c := Dial(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:1"}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung while connecting")
	}
}

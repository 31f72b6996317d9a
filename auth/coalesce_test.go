package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// counterModel is an in-memory countFunc with the script's semantics, whose
// calls can be held to line up a batch behind them.
type counterModel struct {
	mu    sync.Mutex
	used  map[string]int64
	calls []int64 // n of each call, in order
	hold  chan struct{}
}

func (m *counterModel) count(ctx context.Context, key string, limit, n int64) (int64, int64, error) {
	if m.hold != nil {
		<-m.hold
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, n)
	before := m.used[key]
	granted := max(0, min(n, limit-before))
	m.used[key] = before + granted
	return before, granted, nil
}

func TestCoalescerBatchesBehindACallInFlight(t *testing.T) {
	m := &counterModel{used: map[string]int64{}, hold: make(chan struct{})}
	c := newCoalescer(m.count)
	ctx := context.Background()
	const limit, waiting = 6, 9

	type answer struct {
		used    int64
		allowed bool
	}
	first := make(chan answer)
	go func() {
		used, ok, _ := c.Count(ctx, "k", limit)
		first <- answer{used, ok}
	}()
	// Wait until the first call is on its way, then line up the others.
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.keys[counterLimit{"k", limit}] != nil })
	answers := make(chan answer, waiting)
	for i := 0; i < waiting; i++ {
		go func() {
			used, ok, err := c.Count(ctx, "k", limit)
			if err != nil {
				t.Error(err)
			}
			answers <- answer{used, ok}
		}()
	}
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		next := c.keys[counterLimit{"k", limit}].next
		return next != nil && next.n == waiting
	})
	close(m.hold)

	if a := <-first; a != (answer{1, true}) {
		t.Fatalf("first call: %+v", a)
	}
	var used []int64
	denied := 0
	for i := 0; i < waiting; i++ {
		a := <-answers
		if a.allowed {
			used = append(used, a.used)
		} else {
			denied++
		}
	}
	slices.Sort(used)
	if !slices.Equal(used, []int64{2, 3, 4, 5, 6}) || denied != 4 {
		t.Fatalf("allowed with counts %v, %d denied; want 2..6 and 4 denied", used, denied)
	}
	if !slices.Equal(m.calls, []int64{1, waiting}) {
		t.Fatalf("script calls %v, want [1 %d]: the waiting calls in one batch", m.calls, waiting)
	}
	if len(c.keys) != 0 {
		t.Fatalf("%d keys left behind", len(c.keys))
	}
}

// Under any interleaving the quota is exact and the calls are answered.
func TestCoalescerExactUnderRaces(t *testing.T) {
	m := &counterModel{used: map[string]int64{}}
	c := newCoalescer(m.count)
	const limit, calls = 100, 1000
	var mu sync.Mutex
	allowed := map[int64]bool{}
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			used, ok, err := c.Count(context.Background(), "k", limit)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				if allowed[used] {
					t.Errorf("count %d given twice", used)
				}
				allowed[used] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(allowed) != limit || m.used["k"] != limit {
		t.Fatalf("%d allowed, counter %d; want %d", len(allowed), m.used["k"], limit)
	}
	t.Logf("%d calls in %d script calls", calls, len(m.calls))
}

func TestCoalescerErrorReachesTheBatch(t *testing.T) {
	boom := errors.New("redis down")
	c := newCoalescer(func(context.Context, string, int64, int64) (int64, int64, error) { return 0, 0, boom })
	if _, ok, err := c.Count(context.Background(), "k", 5); ok || !errors.Is(err, boom) {
		t.Fatalf("got %v %v", ok, err)
	}
	if len(c.keys) != 0 {
		t.Fatal("key left behind after an error")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

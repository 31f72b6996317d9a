package main

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"pesto/shared/servicetest"
)

// counterModel is an in-memory countFunc and refundFunc with the scripts'
// semantics, whose calls can be held to line up a batch behind them.
type counterModel struct {
	mu      sync.Mutex
	used    map[string]int64
	calls   [][]entry // the entries of each call, in order
	refunds map[string]int64
	hold    chan struct{}
}

func newCounterModel() *counterModel {
	return &counterModel{used: map[string]int64{}, refunds: map[string]int64{}}
}

func (m *counterModel) count(ctx context.Context, deadline time.Time, entries []entry) error {
	if m.hold != nil {
		<-m.hold
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, slices.Clone(entries))
	if !deadline.IsZero() && time.Now().After(deadline) {
		return errLate
	}
	for i := range entries {
		e := &entries[i]
		e.before = m.used[e.key]
		e.granted = max(0, min(e.n, e.pol.limit-e.before))
		m.used[e.key] = e.before + e.granted
	}
	return nil
}

func (m *counterModel) refund(ctx context.Context, key string, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.used[key] -= n
	m.refunds[key] += n
	return nil
}

func (m *counterModel) newGroupCommit() *groupCommit {
	return newGroupCommit(m.count, m.refund, func(string) uint16 { return 0 }, nil)
}

func (q *groupCommit) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queues) == 0
}

// Calls of any keys that arrive while a batch is on its way are counted
// together by the next script call, each key exactly.
func TestQuotaBatchesBehindACallInFlight(t *testing.T) {
	m := newCounterModel()
	m.hold = make(chan struct{})
	q := m.newGroupCommit()
	ctx := context.Background()
	const limit, waiting = 6, 9

	type answer struct {
		key     string
		used    int64
		allowed bool
	}
	first := make(chan answer)
	go func() {
		v, _ := q.Count(ctx, "a", policy{limit: limit})
		first <- answer{"a", v.used, v.allowed}
	}()
	// Wait until the first call is on its way, then line up the others:
	// waiting calls of "a" and waiting of "b".
	servicetest.Poll(t, 5*time.Second, "first call on its way", func() bool { return !q.idle() })
	answers := make(chan answer, 2*waiting)
	for i := 0; i < 2*waiting; i++ {
		key := []string{"a", "b"}[i%2]
		go func() {
			v, err := q.Count(ctx, key, policy{limit: limit})
			if err != nil {
				t.Error(err)
			}
			answers <- answer{key, v.used, v.allowed}
		}()
	}
	servicetest.Poll(t, 5*time.Second, "the others lined up behind it", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		next := q.queues[0].next
		return next != nil && len(next.entries) == 2 && next.entries[0].n+next.entries[1].n == 2*waiting
	})
	close(m.hold)

	if a := <-first; a != (answer{"a", 1, true}) {
		t.Fatalf("first call: %+v", a)
	}
	used := map[string][]int64{}
	denied := map[string]int{}
	for i := 0; i < 2*waiting; i++ {
		a := <-answers
		if a.allowed {
			used[a.key] = append(used[a.key], a.used)
		} else {
			denied[a.key]++
		}
	}
	slices.Sort(used["a"])
	slices.Sort(used["b"])
	if !slices.Equal(used["a"], []int64{2, 3, 4, 5, 6}) || denied["a"] != 4 ||
		!slices.Equal(used["b"], []int64{1, 2, 3, 4, 5, 6}) || denied["b"] != 3 {
		t.Fatalf("allowed with counts %v, denied %v; want a: 2..6 and 4 denied, b: 1..6 and 3 denied", used, denied)
	}
	if len(m.calls) != 2 || len(m.calls[0]) != 1 || len(m.calls[1]) != 2 {
		t.Fatalf("script calls %v, want 2: the waiting calls in one", m.calls)
	}
	servicetest.Poll(t, 5*time.Second, "queue retired", q.idle)
}

// Under any interleaving the quota is exact and the calls are answered.
func TestQuotaExactUnderRaces(t *testing.T) {
	m := newCounterModel()
	q := m.newGroupCommit()
	const limit, calls, keys = 100, 3000, 3
	var mu sync.Mutex
	allowed := map[string]map[int64]bool{}
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		key := strconv.Itoa(i % keys)
		go func() {
			defer wg.Done()
			v, err := q.Count(context.Background(), key, policy{limit: limit})
			if err != nil {
				t.Error(err)
			}
			if used := v.used; v.allowed {
				mu.Lock()
				if allowed[key] == nil {
					allowed[key] = map[int64]bool{}
				}
				if allowed[key][used] {
					t.Errorf("%s: count %d given twice", key, used)
				}
				allowed[key][used] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for k := 0; k < keys; k++ {
		key := strconv.Itoa(k)
		if len(allowed[key]) != limit || m.used[key] != limit {
			t.Fatalf("%s: %d allowed, counter %d; want %d", key, len(allowed[key]), m.used[key], limit)
		}
	}
	t.Logf("%d calls in %d script calls", calls, len(m.calls))
}

func TestQuotaErrorReachesTheBatch(t *testing.T) {
	boom := errors.New("redis down")
	q := newGroupCommit(func(context.Context, time.Time, []entry) error { return boom }, nil, func(string) uint16 { return 0 }, nil)
	if v, err := q.Count(context.Background(), "k", policy{limit: 5}); v.allowed || !errors.Is(err, boom) {
		t.Fatalf("got %+v %v", v, err)
	}
	servicetest.Poll(t, 5*time.Second, "queue retired after an error", q.idle)
}

// A call whose reply comes after it gave up (answered 500) is not counted:
// what the script granted it is refunded, exactly.
func TestQuotaRefundsALateGrant(t *testing.T) {
	m := newCounterModel()
	m.hold = make(chan struct{})
	q := m.newGroupCommit()
	// The script's deadline is far: only the caller's patience runs out.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	gaveUp, giveUp := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := q.Count(gaveUp, "k", policy{limit: 10})
		errc <- err
	}()
	servicetest.Poll(t, 5*time.Second, "call on its way", func() bool { return !q.idle() })
	giveUp()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("gave up with %v", err)
	}
	close(m.hold) // the reply comes in: one call granted to no one
	servicetest.Poll(t, 5*time.Second, "late grant refunded", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.refunds["k"] == 1 && m.used["k"] == 0
	})
	if v, err := q.Count(ctx, "k", policy{limit: 10}); v != (verdict{used: 1, allowed: true}) || err != nil {
		t.Fatalf("next call: %+v %v, want the first of the month", v, err)
	}
}

// A batch whose deadline has passed before it could be sent is not sent:
// its calls get errLate and nothing is counted.
func TestQuotaPastDeadlineSendsNothing(t *testing.T) {
	m := newCounterModel()
	q := m.newGroupCommit()
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(countGrace/2))
	defer cancel()
	if v, err := q.Count(ctx, "k", policy{limit: 10}); v.allowed || !errors.Is(err, errLate) {
		t.Fatalf("got %+v %v, want errLate", v, err)
	}
	if len(m.calls) != 0 || m.used["k"] != 0 {
		t.Fatalf("sent %v, counter %d", m.calls, m.used["k"])
	}
}

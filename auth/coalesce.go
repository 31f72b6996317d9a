package main

import (
	"context"
	"sync"
)

// countFunc counts up to n calls against limit on the counter key in one
// atomic Redis step. It returns the calls counted before this step and how
// many of the n it counted: min(n, limit-before), or 0.
type countFunc func(ctx context.Context, key string, limit, n int64) (before, granted int64, err error)

// coalescer is group commit for counters. Calls of one key that arrive
// while a count of that key is on its way to Redis wait together, and are
// counted by the next single script call: a hot key costs Redis one script
// per round trip instead of one per call, and every call still waits for at
// most one round trip of its own. The quota stays exact: each script is
// atomic and grants calls in arrival order.
type coalescer struct {
	count countFunc
	mu    sync.Mutex
	keys  map[counterLimit]*batch // the batch being filled, per key with one on its way
}

// counterLimit identifies a queue: a counter, and the limit its calls carry
// (a record changed meanwhile starts another queue).
type counterLimit struct {
	key   string
	limit int64
}

// batch is the calls of one key counted by one script call.
type batch struct {
	n       int64         // calls in the batch
	turn    chan struct{} // closed when the batch may be sent
	done    chan struct{} // closed when before, granted and err are set (nil when alone)
	next    *batch        // the batch filling behind this one, if any
	before  int64
	granted int64
	err     error
}

func newCoalescer(count countFunc) *coalescer {
	return &coalescer{count: count, keys: map[counterLimit]*batch{}}
}

// Count counts one call against limit on key: it returns the calls counted
// after this one and true, or false when the limit was reached before it.
func (c *coalescer) Count(ctx context.Context, key string, limit int64) (int64, bool, error) {
	k := counterLimit{key, limit}
	c.mu.Lock()
	head, busy := c.keys[k]
	if !busy {
		// Nothing on its way for this key: count at once, alone. (Calls that
		// come meanwhile join the next batch, so no one waits on this one.)
		b := &batch{n: 1}
		c.keys[k] = b
		c.mu.Unlock()
		c.send(ctx, k, b)
		return b.result(limit, 0)
	}
	b := head.next
	if b == nil {
		b = &batch{turn: make(chan struct{}), done: make(chan struct{})}
		head.next = b
	}
	i := b.n
	b.n++
	c.mu.Unlock()

	if i == 0 {
		// The first call of a batch sends it when the one ahead is back.
		<-b.turn
		c.send(ctx, k, b)
		return b.result(limit, 0)
	}
	select {
	case <-b.done:
		return b.result(limit, i)
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
}

// send counts b, then lets the batch behind it go, or retires the key.
func (c *coalescer) send(ctx context.Context, k counterLimit, b *batch) {
	c.mu.Lock()
	n := b.n // no call joins b from here on: it is no longer head.next
	c.mu.Unlock()
	b.before, b.granted, b.err = c.count(ctx, k.key, k.limit, n)
	if b.done != nil {
		close(b.done)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if b.next == nil {
		delete(c.keys, k)
		return
	}
	c.keys[k] = b.next
	close(b.next.turn)
}

// result is the answer of the i-th call of the batch.
func (b *batch) result(limit, i int64) (int64, bool, error) {
	if b.err != nil {
		return 0, false, b.err
	}
	if i >= b.granted {
		return 0, false, nil
	}
	return b.before + i + 1, true, nil
}

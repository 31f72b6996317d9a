package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// tokenCache is the client-side cache of token records, one per Redis
// connection (rueidis.CacheStore, for ClientOption.NewCacheStoreFn). It
// keeps what rueidis's own cache keeps, with the same rules (single
// flight, invalidation, the shorter of the client's and the server's TTL,
// a byte budget), in less memory: one small struct per key, where
// rueidis's keeps a map, a list element, a channel and three structs
// (about 1 KiB a key with a 64-character key and its record, against about
// 0.42 KiB here). With 10,000 keys that is most of auth's heap, and of its
// peak memory.
//
// A hit takes the read lock only. Eviction is CLOCK: a hit marks its entry,
// and the hand gives a marked entry a second chance before evicting it.
type tokenCache struct {
	mu      sync.RWMutex
	entries map[string]*cached // by key; nil once closed
	hand    *cached            // the ring of entries, in insertion order
	n       int                // entries
	size    int                // estimated bytes of the entries
	max     int
}

// cached is one command's reply on one key.
type cached struct {
	key, cmd   string
	val        rueidis.RedisMessage
	xat        int64   // expiry, Unix milliseconds
	size       int     // estimated bytes, once filled
	flight     *flight // while the reply is awaited
	used       atomic.Bool
	same       *cached // the next entry of the same key (another command)
	prev, next *cached // the ring
}

// flight is a reply awaited: the calls that miss meanwhile wait for it.
type flight struct {
	done chan struct{}
	val  rueidis.RedisMessage
	err  error
}

func (f *flight) Wait(ctx context.Context) (rueidis.RedisMessage, error) {
	select {
	case <-ctx.Done():
		return rueidis.RedisMessage{}, ctx.Err()
	case <-f.done:
		return f.val, f.err
	}
}

// cachedOverhead is the bytes of an entry besides its key, command and
// value: the struct (128 B, the reply's message in it) and its place in the
// map (TestTokenCacheMemory measures it: 155 B).
const cachedOverhead = 160

var _ rueidis.CacheStore = (*tokenCache)(nil)

func newTokenCache(maxBytes int) *tokenCache {
	return &tokenCache{entries: map[string]*cached{}, max: maxBytes}
}

// find is key's entry for cmd (under mu).
func (c *tokenCache) find(key, cmd string) *cached {
	for e := c.entries[key]; e != nil; e = e.same {
		if e.cmd == cmd {
			return e
		}
	}
	return nil
}

// Flight answers a hit, the flight of a miss already asked for, or (both
// empty) a miss that the caller asks Redis for, its flight recorded.
func (c *tokenCache) Flight(key, cmd string, ttl time.Duration, now time.Time) (rueidis.RedisMessage, rueidis.CacheEntry) {
	ms := now.UnixMilli()
	c.mu.RLock()
	e := c.find(key, cmd)
	if e != nil {
		if f := e.flight; f != nil {
			c.mu.RUnlock()
			return rueidis.RedisMessage{}, f
		}
		if ms < e.xat {
			e.used.Store(true)
			v := e.val
			c.mu.RUnlock()
			return v, nil
		}
	}
	c.mu.RUnlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil { // closed: the caller asks Redis, nothing is kept
		return rueidis.RedisMessage{}, nil
	}
	if e = c.find(key, cmd); e != nil {
		if f := e.flight; f != nil {
			return rueidis.RedisMessage{}, f
		}
		if ms < e.xat {
			e.used.Store(true)
			return e.val, nil
		}
		c.remove(e)
	}
	c.insert(&cached{key: key, cmd: cmd, xat: now.Add(ttl).UnixMilli(), flight: &flight{done: make(chan struct{})}})
	return rueidis.RedisMessage{}, nil
}

// Update keeps the reply of a flight and hands it to its waiters. The
// entry expires at the earlier of the client's TTL and the server's.
func (c *tokenCache) Update(key, cmd string, val rueidis.RedisMessage) (pxat int64) {
	c.mu.Lock()
	e := c.find(key, cmd)
	if e == nil || e.flight == nil {
		c.mu.Unlock()
		return 0
	}
	if server := val.CachePXAT(); server > 0 && server < e.xat {
		e.xat = server
	}
	f := e.flight
	e.val, e.flight = val, nil
	e.size = cachedOverhead + len(key) + len(cmd)
	if s, err := val.ToString(); err == nil {
		e.size += len(s)
	}
	c.size += e.size
	c.evict()
	pxat = e.xat
	c.mu.Unlock()
	f.val = val
	close(f.done)
	return pxat
}

// Cancel hands err to the waiters of a flight and forgets it.
func (c *tokenCache) Cancel(key, cmd string, err error) {
	c.mu.Lock()
	e := c.find(key, cmd)
	if e == nil || e.flight == nil {
		c.mu.Unlock()
		return
	}
	f := e.flight
	c.remove(e)
	c.mu.Unlock()
	f.err = err
	close(f.done)
}

// Delete drops the replies of keys (every key: nil), not the flights.
func (c *tokenCache) Delete(keys []rueidis.RedisMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		return
	}
	if keys == nil {
		for _, e := range c.entries {
			c.dropFilled(e)
		}
		return
	}
	for _, k := range keys {
		if key, err := k.ToString(); err == nil {
			c.dropFilled(c.entries[key])
		}
	}
}

// dropFilled removes the entries of e's chain that are not flights.
func (c *tokenCache) dropFilled(e *cached) {
	for e != nil {
		next := e.same
		if e.flight == nil {
			c.remove(e)
		}
		e = next
	}
}

// Close empties the cache for good and hands err to every flight.
func (c *tokenCache) Close(err error) {
	c.mu.Lock()
	var flights []*flight
	for _, e := range c.entries {
		for ; e != nil; e = e.same {
			if e.flight != nil {
				flights = append(flights, e.flight)
			}
		}
	}
	c.entries, c.hand, c.n, c.size = nil, nil, 0, 0
	c.mu.Unlock()
	for _, f := range flights {
		f.err = err
		close(f.done)
	}
}

// insert adds e to the map and to the ring, just behind the hand (under mu).
func (c *tokenCache) insert(e *cached) {
	c.n++
	e.same = c.entries[e.key]
	c.entries[e.key] = e
	if c.hand == nil {
		e.prev, e.next = e, e
		c.hand = e
		return
	}
	e.prev, e.next = c.hand.prev, c.hand
	c.hand.prev.next = e
	c.hand.prev = e
}

// remove takes e out of the map and the ring (under mu).
func (c *tokenCache) remove(e *cached) {
	if first := c.entries[e.key]; first == e {
		if e.same == nil {
			delete(c.entries, e.key)
		} else {
			c.entries[e.key] = e.same
		}
	} else {
		for p := first; p != nil; p = p.same {
			if p.same == e {
				p.same = e.same
				break
			}
		}
	}
	if e.next == e {
		c.hand = nil
	} else {
		e.prev.next, e.next.prev = e.next, e.prev
		if c.hand == e {
			c.hand = e.next
		}
	}
	e.prev, e.next, e.same = nil, nil, nil
	c.n--
	c.size -= e.size
}

// evict removes entries until the cache is within its budget: the hand
// passes over flights, and over a used entry once, clearing its mark (under
// mu). Two turns of the ring at most: after one every mark is clear.
func (c *tokenCache) evict() {
	for steps := 2 * c.n; c.size > c.max && c.hand != nil && steps > 0; steps-- {
		e := c.hand
		c.hand = e.next
		if e.flight != nil || e.used.Swap(false) {
			continue
		}
		c.remove(e)
	}
}

package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pesto/shared/apikey"
	"pesto/shared/redistest"
	"pesto/shared/wire"

	"github.com/redis/rueidis"
)

// trackingBytesPerKey bounds what Redis's tracking table costs per key a
// client-side cache has read, for the longest token auth looks up (256
// bytes): measured at about 422 bytes on Redis 7.0 (182 for a 64-character
// key). docs/migration.md and the README's Operations quote it.
const trackingBytesPerKey = 450

// The client-side cache's cost in Redis is bounded by redis.conf: a flood
// of unknown 256-byte tokens read as auth reads them (RESP3, CLIENT
// TRACKING, opt-in) leaves at most tracking-table-max-keys keys tracked,
// and Redis's memory grows by at most that many times trackingBytesPerKey,
// inside compose's maxmemory with room for the data.
func TestRedisTrackingTableBounded(t *testing.T) {
	addr, _ := startRedisConf(t)
	maxKeys, err := strconv.Atoi(configGet(t, addr, "tracking-table-max-keys"))
	if err != nil || maxKeys < 1 {
		t.Fatalf("tracking-table-max-keys = %q: want a bound", configGet(t, addr, "tracking-table-max-keys"))
	}
	maxmemory, _ := strconv.Atoi(configGet(t, addr, "maxmemory"))
	if budget := maxKeys * trackingBytesPerKey; budget > maxmemory/4 {
		t.Fatalf("the tracking table may take %d bytes, over a quarter of maxmemory (%d)", budget, maxmemory)
	}

	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableRetry: true,
		CacheSizeEachConn: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info := func(field string) int { return infoField(t, c, field) }
	before := info("used_memory")
	const keyLen, batch = 256, 1000
	flood := maxKeys + maxKeys/2
	raw := make([]byte, keyLen/2)
	for sent := 0; sent < flood; sent += batch {
		cmds := make([]rueidis.CacheableTTL, batch)
		for i := range cmds {
			_, _ = rand.Read(raw)
			cmds[i] = rueidis.CT(c.B().Get().Key(hex.EncodeToString(raw)).Cache(), time.Minute)
		}
		readCached(t, c, cmds)
	}
	tracked, grown := info("tracking_total_keys"), info("used_memory")-before
	t.Logf("%d unknown %d-byte keys read: %d tracked, used_memory +%d bytes (%.0f per tracked key)",
		flood, keyLen, tracked, grown, float64(grown)/float64(max(tracked, 1)))
	if tracked > maxKeys || tracked < maxKeys/2 {
		t.Fatalf("tracking_total_keys = %d, want at most tracking-table-max-keys (%d) and most of it", tracked, maxKeys)
	}
	if grown > maxKeys*trackingBytesPerKey {
		t.Fatalf("used_memory grew by %d bytes, over %d keys × %d", grown, maxKeys, trackingBytesPerKey)
	}
}

// A token auth does not know costs Redis one tracking entry where no key
// was ever hashed (KEY_STORAGE=plain and no wire.HashedKeysMarker: its
// hashed name is not looked up), about 200 bytes for a 64-character token
// and 440 for a 256-byte one; two once hashed records may exist (the marker
// is set, or KEY_STORAGE=hashed), about 370 and 610 bytes (measured on
// Redis 7.0). The tokens are looked up as auth looks them up
// (apikey.Keys.Lookup, through a client-side cache). docs/migration.md and
// the README's Operations quote it.
func TestUnknownTokenTrackingEntries(t *testing.T) {
	for _, c := range []struct {
		chars    int
		marker   bool
		entries  int
		maxBytes float64
	}{{64, false, 1, 220}, {256, false, 1, 460}, {64, true, 2, 400}, {256, true, 2, 650}} {
		t.Run(fmt.Sprintf("%d characters, marker %v", c.chars, c.marker), func(t *testing.T) {
			perToken := trackingPerUnknownToken(t, c.chars, c.marker, c.entries)
			if perToken > c.maxBytes {
				t.Fatalf("%.0f bytes of tracking table a %d-character token, want at most %.0f", perToken, c.chars, c.maxBytes)
			}
		})
	}
}

// trackingPerUnknownToken looks up 10,000 unknown tokens of chars
// characters as auth does (plain storage; the marker set or not), and
// returns the tracking table's bytes per token; it fails unless each token
// costs entries entries (the marker's own is counted once, and taken off).
func trackingPerUnknownToken(t *testing.T, chars int, marker bool, entries int) float64 {
	t.Helper()
	rs := redistest.StartStandalone(t)
	if marker {
		rs.Do("SET", wire.HashedKeysMarker, "1")
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableRetry: true,
		CacheSizeEachConn: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stat := func(field string) int { return infoField(t, c, field) }
	before := stat("used_memory")
	keys := apikey.Keys{Storage: wire.StoragePlain}
	const tokens, workers = 10_000, 16
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := make([]byte, chars/2)
			for range tokens / workers {
				_, _ = rand.Read(raw)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _, err := keys.Lookup(ctx, c, hex.EncodeToString(raw), time.Minute)
				cancel()
				if !errors.Is(err, apikey.ErrNotFound) {
					t.Errorf("worker %d: %v, want not found", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	tracked, perToken := stat("tracking_total_keys")-1, float64(stat("used_memory")-before)/tokens
	t.Logf("%d unknown %d-character tokens, marker %v: %d tracked, %.0f bytes each", tokens, chars, marker, tracked, perToken)
	if tracked != entries*tokens {
		t.Fatalf("tracking_total_keys = %d (without the marker's), want %d: %d a token", tracked, entries*tokens, entries)
	}
	return perToken
}

// infoField returns an integer field of Redis's INFO.
func infoField(t *testing.T, c rueidis.Client, field string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Do(ctx, c.B().Info().Section("all").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("INFO has no %s", field)
	return 0
}

// readCached runs cmds through c's client-side cache, as auth reads
// records: each key is then in Redis's tracking table.
func readCached(t *testing.T, c rueidis.Client, cmds []rueidis.CacheableTTL) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range c.DoMultiCache(ctx, cmds...) {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			t.Fatal(err)
		}
	}
}

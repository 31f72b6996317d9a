package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

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
	info := func(field string) int {
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
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, r := range c.DoMultiCache(ctx, cmds...) {
			if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
				cancel()
				t.Fatal(err)
			}
		}
		cancel()
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

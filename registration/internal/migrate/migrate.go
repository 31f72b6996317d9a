// Package migrate moves every plaintext key record there is to its hashed
// form (registration migrate-keys, KEY_STORAGE=hashed): SCAN ... TYPE
// string on each master, the names that could be keys whose value reads as
// a token record, each moved by apikey.Move (safe while auth serves calls
// on the same keys). It prints a progress line per batch and a summary,
// never a key.
package migrate

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/apikey"
	"pesto/shared/wire"
)

// step bounds the Redis work of one batch.
const step = 10 * time.Second

// tally is what migrate-keys saw and did.
type tally struct {
	scanned int // string keys scanned
	records int // plaintext token records among them (well-formed token names)
	moved   int // moved to their hashed form (--apply)
	skipped int // well-formed names whose value is not a token record
	gone    int // records gone (moved by auth, expired) before their move
}

func (t tally) String() string {
	return fmt.Sprintf("scanned %d string keys, %d plaintext key records, moved %d, gone meanwhile %d, not records %d",
		t.scanned, t.records, t.moved, t.gone, t.skipped)
}

// Keys moves (apply) or counts (a dry run) the plaintext key records of
// every master c reaches, batch names per SCAN call, and prints its
// progress and a summary to stdout.
func Keys(ctx context.Context, c rueidis.Client, batch int, apply bool, stdout io.Writer) error {
	nodes, err := masters(ctx, c)
	if err != nil {
		return err
	}
	mode := "dry run"
	if apply {
		mode = "apply"
	}
	fmt.Fprintf(stdout, "migrate-keys (%s): %d node(s) to scan\n", mode, len(nodes))
	if apply {
		// Before any move: services with plain storage look up hashed
		// names from now on (each move sets it too).
		sctx, cancel := context.WithTimeout(ctx, step)
		err := apikey.MarkHashed(sctx, c)
		cancel()
		if err != nil {
			return err
		}
	}
	var total tally
	for _, n := range nodes {
		t, err := scanNodeKeys(ctx, c, n.client, n.addr, batch, apply, stdout)
		total.scanned += t.scanned
		total.records += t.records
		total.moved += t.moved
		total.skipped += t.skipped
		total.gone += t.gone
		if err != nil {
			fmt.Fprintf(stdout, "stopped: %s; %v (run it again to go on)\n", total, err)
			return err
		}
	}
	if apply {
		fmt.Fprintf(stdout, "done: %s\n", total)
	} else {
		fmt.Fprintf(stdout, "dry run done: %s; nothing written (--apply moves the %d records)\n", total, total.records)
	}
	return nil
}

type scanNode struct {
	addr   string
	client rueidis.Client
}

// masters are the nodes to scan: the client itself on a single Redis, each
// master of a Cluster (a replica holds the same keys).
func masters(ctx context.Context, c rueidis.Client) ([]scanNode, error) {
	if c.Mode() != rueidis.ClientModeCluster {
		return []scanNode{{"redis", c}}, nil
	}
	var out []scanNode
	for addr, n := range c.Nodes() {
		sctx, cancel := context.WithTimeout(ctx, step)
		role, err := n.Do(sctx, n.B().Role().Build()).ToArray()
		cancel()
		if err != nil || len(role) == 0 {
			return nil, fmt.Errorf("ROLE on %s: %v", addr, err)
		}
		if r, _ := role[0].ToString(); r == "master" {
			out = append(out, scanNode{addr, n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out, nil
}

// scanNodeKeys scans one node, batch by batch.
func scanNodeKeys(ctx context.Context, c, node rueidis.Client, addr string, batch int, apply bool, stdout io.Writer) (tally, error) {
	var t tally
	cursor := uint64(0)
	for {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		sctx, cancel := context.WithTimeout(ctx, step)
		entry, err := node.Do(sctx, node.B().Scan().Cursor(cursor).Count(int64(batch)).Type("string").Build()).AsScanEntry()
		if err == nil {
			err = moveBatch(sctx, c, entry.Elements, apply, &t)
		}
		cancel()
		if err != nil {
			return t, err
		}
		cursor = entry.Cursor
		fmt.Fprintf(stdout, "%s cursor %d: %s\n", addr, cursor, t)
		if cursor == 0 {
			return t, nil
		}
	}
}

// moveBatch checks the names of one SCAN reply and moves the records.
func moveBatch(ctx context.Context, c rueidis.Client, names []string, apply bool, t *tally) error {
	t.scanned += len(names)
	candidates := names[:0:0]
	for _, name := range names {
		// Our own keys (pesto:…, counters, the waiting list, hashed records)
		// and what no client could send are never token names.
		if wire.WellFormedToken(name) {
			candidates = append(candidates, name)
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, len(candidates))
	for i, name := range candidates {
		cmds[i] = c.B().Get().Key(name).Build()
	}
	var records []string
	for i, res := range c.DoMulti(ctx, cmds...) {
		raw, err := res.ToString()
		switch {
		case rueidis.IsRedisNil(err):
			t.gone++
			continue
		case err != nil:
			if _, ok := rueidis.IsRedisErr(err); ok {
				t.skipped++ // its type changed since the scan
				continue
			}
			return err
		}
		if _, err := wire.DecodeTokenRecord(raw); err != nil {
			t.skipped++
			continue
		}
		records = append(records, candidates[i])
	}
	t.records += len(records)
	if !apply {
		return nil
	}
	for _, name := range records {
		moved, err := apikey.Move(ctx, c, name)
		if err != nil {
			return fmt.Errorf("moving %s: %w", shortName(name), err)
		}
		if moved {
			t.moved++
		} else {
			t.gone++
		}
	}
	return nil
}

// shortName is how a key is named in migrate-keys' output: never whole.
func shortName(name string) string {
	return wire.HashedKey(name)[len(wire.HashedKeyPrefix):][:12] + "…(hashed)"
}

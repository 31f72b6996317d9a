// Package migrate moves every plaintext key record there is to its hashed
// form (registration migrate-keys, KEY_STORAGE=hashed): SCAN ... TYPE
// string on each master, the names that could be keys whose value reads as
// a token record, each moved by apikey.Move (safe while auth serves calls
// on the same keys). It prints a progress line per batch and a summary,
// never a key, and names (as logs do) the keys too weak to be safe as an
// unsalted hash (KeyBits below MinKeyBits).
package migrate

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/apikey"
	"pesto/shared/logging"
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
	weak    int // records whose key is too weak to be safe as an unsalted hash
}

func (t tally) String() string {
	return fmt.Sprintf("scanned %d string keys, %d plaintext key records, moved %d, gone meanwhile %d, not records %d, weak keys %d",
		t.scanned, t.records, t.moved, t.gone, t.skipped, t.weak)
}

// add adds u to t.
func (t *tally) add(u tally) {
	t.scanned += u.scanned
	t.records += u.records
	t.moved += u.moved
	t.skipped += u.skipped
	t.gone += u.gone
	t.weak += u.weak
}

// MinKeyBits is the least estimated strength (KeyBits) of a key whose
// unsalted SHA-256 is safe in a Redis dump: one of fewer bits can be found
// from its hashed name by trying candidates. Keys registration makes have
// about 380.
const MinKeyBits = 128

// KeyBits estimates the strength of key in bits, the least of three
// estimates: its length times the bits a character of the classes it uses
// would carry if drawn at random (lower-case letters 26, upper-case 26,
// digits 10, other printable ASCII 32, anything else 128 more); its length
// times the Shannon entropy of its own characters; and, for repeats, the
// phrases of its greedy Lempel–Ziv parse (each a new character or the
// longest stretch seen before) times the bits to write one. Generous to
// random keys, stingy to short ones, words and repeats: "johndoe-key" is
// about 34 bits, 64 random characters of [A-Za-z0-9] about 340.
func KeyBits(key string) float64 {
	if key == "" {
		return 0
	}
	runes := []rune(key)
	n := len(runes)
	counts := map[rune]int{}
	var lower, upper, digit, punct, other bool
	for _, r := range runes {
		counts[r]++
		switch {
		case 'a' <= r && r <= 'z':
			lower = true
		case 'A' <= r && r <= 'Z':
			upper = true
		case '0' <= r && r <= '9':
			digit = true
		case r < 0x80:
			punct = true
		default:
			other = true
		}
	}
	alphabet := 0
	for _, c := range []struct {
		used bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {punct, 32}, {other, 128}} {
		if c.used {
			alphabet += c.size
		}
	}
	shannon := 0.0
	for _, c := range counts {
		p := float64(c) / float64(n)
		shannon -= p * math.Log2(p)
	}
	perChar := math.Log2(float64(alphabet))
	lz := float64(phrases(runes)) * (perChar + math.Log2(float64(n)))
	return min(float64(n)*perChar, float64(n)*shannon, lz)
}

// phrases counts the phrases of the greedy Lempel–Ziv parse of s: from
// each position, the longest stretch that also starts earlier (overlap
// allowed), or one new character.
func phrases(s []rune) int {
	count := 0
	for i := 0; i < len(s); count++ {
		longest := 0
		for j := 0; j < i; j++ {
			l := 0
			for i+l < len(s) && s[j+l] == s[i+l] {
				l++
			}
			longest = max(longest, l)
		}
		i += max(longest, 1)
	}
	return count
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
		total.add(t)
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
	if total.weak > 0 {
		fmt.Fprintf(stdout, "%d weak keys (named above by their first characters and a hash): each is estimated below %d bits, "+
			"so its unsalted SHA-256 can be found by trying candidates. Rotate them (PUT /api/rotate) before they are hashed "+
			"(docs/migration.md); hashed, they are no weaker than in plaintext, but the hash protects them no more\n",
			total.weak, MinKeyBits)
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
			err = moveBatch(sctx, c, entry.Elements, apply, &t, stdout)
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

// moveBatch checks the names of one SCAN reply and moves the records,
// and names each weak key (KeyBits below MinKeyBits) on stdout, as logs
// name keys: its first characters and a hash, with its record's email.
func moveBatch(ctx context.Context, c rueidis.Client, names []string, apply bool, t *tally, stdout io.Writer) error {
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
		rec, err := wire.DecodeTokenRecord(raw)
		if err != nil {
			t.skipped++
			continue
		}
		if bits := KeyBits(candidates[i]); bits < MinKeyBits {
			t.weak++
			fmt.Fprintf(stdout, "weak key %s of %s: about %.0f bits\n", logging.Token(candidates[i]), rec.UserEmail, bits)
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

package main

import "pesto/shared/wire"

// The index of people on the waiting list (waitinglist.go's indexLua). The
// legacy list's name, waiting-list, has no hash tag, so its cluster slot is
// that of the whole name; the tag {waiting-list} hashes the same bytes, so
// every key below is in the list's slot and one script may use them all
// (TestIndexKeysShareTheListSlot checks it against a Redis Cluster).
const (
	peopleKey     = "pesto:{waiting-list}:people"      // hash: person -> their oldest listed signup
	peopleMoreKey = "pesto:{waiting-list}:people:more" // hash: person -> further listed signups (legacy duplicates)
	peopleSeenKey = "pesto:{waiting-list}:people:seen" // hash: n, tail — how far the index covers the list
)

// approvingPrefix starts the key that holds an approval's token from its
// first step until it is complete: pesto:{waiting-list}:approving:<email>
// (email trimmed and lower-cased). The hash tag keeps it in the waiting
// list's cluster slot, beside the outbox.
const approvingPrefix = wire.OwnPrefix + "{waiting-list}:approving:"

// rateLimitPrefix starts every rate-limit key:
// pesto:ratelimit:{<route>}:<bucket>, where a bucket is an IPv4 address, an
// IPv6 prefix (2001:db8:1:2::/64) or "all" (the route's global cap). The
// hash tag puts a route's buckets in one cluster slot, so that one script
// checks and counts all of a request's buckets at once.
const rateLimitPrefix = wire.OwnPrefix + "ratelimit:"

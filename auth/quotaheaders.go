package main

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"pesto/shared/wire"
)

// Names of the two policies in the structured RateLimit fields.
const (
	monthlyPolicy = `"monthly"`
	ratePolicy    = `"rate"`
)

// quotaState is what the rate headers and /api/usage say of a key's
// month: its limit, the calls it has left, and when the month ends.
type quotaState struct {
	limit     int64 // the record's MonthlyLimit, at least 0
	remaining int64 // calls left after this one
	reset     int64 // seconds to the next UTC month, at least 1
	window    int64 // seconds of the current UTC month
}

// monthOf returns the reset and window of the UTC month of t.
func monthOf(t time.Time) (reset, window int64) {
	next := wire.NextMonth(t)
	y, m, _ := t.UTC().Date()
	start := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	return max(int64(next.Sub(t)/time.Second), 1), int64(next.Sub(start) / time.Second)
}

// rateState is what the rate headers and /api/usage say of a key's rate:
// the policy, the calls it lets through now, and when that grows.
type rateState struct {
	on        bool  // the key has a rate and it was read
	limit     int64 // calls in any window
	window    int64 // seconds of the window: 1 or 60
	burst     int64 // calls at once, when fewer than limit; 0: limit
	remaining int64 // calls the rate lets through now, after this one
	reset     int64 // seconds until remaining grows (a refused call's Retry-After)
}

// rateStateOf is the state of rate r with left calls now and wait until
// that grows.
func rateStateOf(r wire.Rate, left int64, wait time.Duration) rateState {
	return rateState{on: true, limit: r.Count, window: int64(r.Per / time.Second), burst: r.Burst,
		remaining: left, reset: int64((wait + time.Second - 1) / time.Second)}
}

// setRateHeaders sets the quota headers of an answer (200, 429 and
// /api/usage): the legacy RateLimit-Limit, -Remaining and -Reset of the
// monthly quota, and the structured fields of the IETF draft
// (draft-ietf-httpapi-ratelimit-headers) with each policy the key has,
// the one closer to refusing first (fewer calls left; the monthly one on
// a tie):
//
//	RateLimit-Policy: "rate";q=<calls>;w=<seconds>[;pesto-burst=<calls>], "monthly";q=<limit>;w=<seconds of the month>
//	RateLimit: "rate";r=<left>;t=<seconds until more>, "monthly";r=<remaining>;t=<seconds to the next month>
//
// with one scratch buffer for all values (the header copies each).
func setRateHeaders(h *fasthttp.ResponseHeader, s quotaState, r rateState) {
	var buf [160]byte
	h.SetBytesV("RateLimit-Limit", strconv.AppendInt(buf[:0], s.limit, 10))
	h.SetBytesV("RateLimit-Remaining", strconv.AppendInt(buf[:0], s.remaining, 10))
	h.SetBytesV("RateLimit-Reset", strconv.AppendInt(buf[:0], s.reset, 10))

	rateFirst := r.on && r.remaining < s.remaining
	b := buf[:0]
	if rateFirst {
		b = appendRatePolicy(b, r)
		b = append(b, ", "...)
	}
	b = append(b, monthlyPolicy+";q="...)
	b = strconv.AppendInt(b, s.limit, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, s.window, 10)
	if r.on && !rateFirst {
		b = append(b, ", "...)
		b = appendRatePolicy(b, r)
	}
	h.SetBytesV("RateLimit-Policy", b)

	b = buf[:0]
	if rateFirst {
		b = appendRateLimit(b, ratePolicy, r.remaining, r.reset)
		b = append(b, ", "...)
	}
	b = appendRateLimit(b, monthlyPolicy, s.remaining, s.reset)
	if r.on && !rateFirst {
		b = append(b, ", "...)
		b = appendRateLimit(b, ratePolicy, r.remaining, r.reset)
	}
	h.SetBytesV("RateLimit", b)
}

// appendRatePolicy appends the rate's item of RateLimit-Policy.
func appendRatePolicy(b []byte, r rateState) []byte {
	b = append(b, ratePolicy+";q="...)
	b = strconv.AppendInt(b, r.limit, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, r.window, 10)
	if r.burst > 0 {
		b = append(b, ";pesto-burst="...)
		b = strconv.AppendInt(b, r.burst, 10)
	}
	return b
}

// appendRateLimit appends an item of RateLimit.
func appendRateLimit(b []byte, name string, remaining, reset int64) []byte {
	b = append(b, name...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, remaining, 10)
	b = append(b, ";t="...)
	return strconv.AppendInt(b, reset, 10)
}

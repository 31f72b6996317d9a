package main

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"pesto/shared/wire"
)

// ratePolicy is the name of the one quota policy, in the structured
// RateLimit fields.
const ratePolicy = `"monthly"`

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

// setRateHeaders sets the quota headers of an answer (200, 429 and
// /api/usage): the legacy RateLimit-Limit, -Remaining and -Reset, and the
// structured fields of the IETF draft (draft-ietf-httpapi-ratelimit-headers)
//
//	RateLimit-Policy: "monthly";q=<limit>;w=<seconds of the month>
//	RateLimit: "monthly";r=<remaining>;t=<seconds to the next month>
//
// with one scratch buffer for all five values (the header copies each).
func setRateHeaders(h *fasthttp.ResponseHeader, s quotaState) {
	var buf [64]byte
	h.SetBytesV("RateLimit-Limit", strconv.AppendInt(buf[:0], s.limit, 10))
	h.SetBytesV("RateLimit-Remaining", strconv.AppendInt(buf[:0], s.remaining, 10))
	h.SetBytesV("RateLimit-Reset", strconv.AppendInt(buf[:0], s.reset, 10))

	b := append(buf[:0], ratePolicy+";q="...)
	b = strconv.AppendInt(b, s.limit, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, s.window, 10)
	h.SetBytesV("RateLimit-Policy", b)

	b = append(buf[:0], ratePolicy+";r="...)
	b = strconv.AppendInt(b, s.remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, s.reset, 10)
	h.SetBytesV("RateLimit", b)
}

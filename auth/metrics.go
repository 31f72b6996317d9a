package main

import "pesto/shared/metrics"

// Decision outcomes, the label values of pesto_auth_decisions_total.
const (
	outAllowed = iota
	outUnmetered
	outNoToken
	outMalformed
	outNotRegistered
	outRevoked
	outOverQuota
	outRateLimited
	outError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"allowed", "unmetered", "no_token", "malformed", "not_registered", "revoked", "over_quota", "rate_limited", "error"}

type authMetrics struct {
	outcome     [numOutcomes]*metrics.Counter
	cacheHits   *metrics.Counter
	cacheMisses *metrics.Counter
	redisErrors *metrics.Counter
	faults      *metrics.Counter
}

func newAuthMetrics(reg *metrics.Registry) *authMetrics {
	m := &authMetrics{
		cacheHits:   reg.Counter("pesto_auth_token_cache_total", "Token record lookups by client-side cache result.", "result", "hit"),
		cacheMisses: reg.Counter("pesto_auth_token_cache_total", "Token record lookups by client-side cache result.", "result", "miss"),
		redisErrors: reg.Counter("pesto_redis_errors_total", "Requests answered 500 because Redis was unreachable or timed out."),
		faults:      reg.Counter("pesto_internal_errors_total", "Requests answered 500 for any other fault (corrupt record, error reply)."),
	}
	for i, name := range outcomeNames {
		m.outcome[i] = reg.Counter("pesto_auth_decisions_total", "Auth decisions by outcome.", "outcome", name)
	}
	return m
}

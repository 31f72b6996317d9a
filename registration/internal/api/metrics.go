package api

import "pesto/shared/metrics"

type regMetrics struct {
	registered  *metrics.Counter
	duplicates  *metrics.Counter
	trials      *metrics.Counter
	approvals   *metrics.Counter
	revokes     *metrics.Counter
	rejects     *metrics.Counter
	rotations   *metrics.Counter
	limited     [2]*metrics.Counter // register, trial
	redisErrors *metrics.Counter
	faults      *metrics.Counter
}

func newRegMetrics(reg *metrics.Registry) *regMetrics {
	const (
		regHelp   = "Signups by result: created, or duplicate of a listed person."
		adminHelp = "Admin actions done."
		limHelp   = "Requests refused by a per-client rate limit, by route."
	)
	return &regMetrics{
		registered:  reg.Counter("pesto_registrations_total", regHelp, "result", "created"),
		duplicates:  reg.Counter("pesto_registrations_total", regHelp, "result", "duplicate"),
		trials:      reg.Counter("pesto_trials_total", "Trial keys created."),
		approvals:   reg.Counter("pesto_admin_actions_total", adminHelp, "action", "approve"),
		revokes:     reg.Counter("pesto_admin_actions_total", adminHelp, "action", "revoke"),
		rejects:     reg.Counter("pesto_admin_actions_total", adminHelp, "action", "reject"),
		rotations:   reg.Counter("pesto_admin_actions_total", adminHelp, "action", "rotate"),
		limited:     [2]*metrics.Counter{reg.Counter("pesto_rate_limited_total", limHelp, "route", "register"), reg.Counter("pesto_rate_limited_total", limHelp, "route", "trial")},
		redisErrors: reg.Counter("pesto_redis_errors_total", "Requests answered 500 because Redis was unreachable or timed out."),
		faults:      reg.Counter("pesto_internal_errors_total", "Requests answered 500 for any other fault."),
	}
}

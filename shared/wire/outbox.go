package wire

import (
	"strconv"
	"time"
)

// The mail outbox: a Redis stream of emails to send, which registration's
// workers deliver. registration queues key emails (approve, rotate); auth
// queues quota warnings. The {waiting-list} hash tag puts every key below in
// the waiting list's Redis Cluster slot, so that one script may queue an
// email together with the step that causes it.
const (
	// OutboxStream is the stream of queued emails.
	OutboxStream = OwnPrefix + "{waiting-list}:outbox"
	// WarnedPrefix starts the marker of a quota warning queued (QuotaWarning):
	// pesto:{waiting-list}:warned:<YYYY-MM>:<percent>:<email as in the
	// counter key>, set in the same atomic step that queues the warning,
	// so that a threshold of a month is never queued twice. It lives
	// CounterTTL, as the month's counter does.
	WarnedPrefix = OwnPrefix + "{waiting-list}:warned:"
)

// Kinds of outbox entry (the field "kind"; absent means KindKey, as every
// entry written before warnings existed).
const (
	KindKey          = "key"
	KindQuotaWarning = "quota-warning"
)

// KeyEmail is an outbox entry that gives a user an API key.
type KeyEmail struct {
	To    string // address
	Name  string // the user's name, for the greeting
	Token string // the API key
	Limit int64  // its monthly limit
}

// Fields returns the stream entry's field/value pairs, in this order:
// to, name, token, limit (no kind: the format registration has always
// written, which every registration version reads).
func (k KeyEmail) Fields() []string {
	return []string{"to", k.To, "name", k.Name, "token", k.Token, "limit", strconv.FormatInt(k.Limit, 10)}
}

// QuotaWarning is an outbox entry that tells a key holder how much of the
// month's quota their email has used.
type QuotaWarning struct {
	To      string    // the email of the token record, as written there
	Percent int       // the threshold crossed, 1–100
	Used    int64     // calls counted when it was crossed
	Limit   int64     // the MonthlyLimit
	Month   time.Time // the UTC month: Fields writes YYYY-MM
}

// Fields returns the stream entry's field/value pairs, in this order:
// kind, to, percent, used, limit, month (YYYY-MM, UTC).
func (w QuotaWarning) Fields() []string {
	return []string{"kind", KindQuotaWarning, "to", w.To, "percent", strconv.Itoa(w.Percent),
		"used", strconv.FormatInt(w.Used, 10), "limit", strconv.FormatInt(w.Limit, 10), "month", w.Month.UTC().Format("2006-01")}
}

// WarnedKey returns the marker of w's threshold and month.
func (w QuotaWarning) WarnedKey() string {
	return WarnedPrefix + w.Month.UTC().Format("2006-01") + ":" + strconv.Itoa(w.Percent) + ":" + w.To
}

// OutboxEntry is one entry of the outbox: exactly one of Key and Warning is
// set.
type OutboxEntry struct {
	Key     *KeyEmail
	Warning *QuotaWarning
}

// ParseOutboxEntry reads an entry's fields (extra fields are ignored). ok is
// false when its kind is unknown or a field it needs is missing or
// malformed: a key email needs to, token and an integer limit; a warning
// needs to, a percent 1–100, integer used and limit, and a YYYY-MM month.
func ParseOutboxEntry(values map[string]string) (e OutboxEntry, ok bool) {
	switch values["kind"] {
	case "", KindKey:
		k := KeyEmail{To: values["to"], Name: values["name"], Token: values["token"]}
		limit, err := strconv.ParseInt(values["limit"], 10, 64)
		if err != nil || k.To == "" || k.Token == "" {
			return OutboxEntry{}, false
		}
		k.Limit = limit
		return OutboxEntry{Key: &k}, true
	case KindQuotaWarning:
		w := QuotaWarning{To: values["to"]}
		var err1, err2, err3, err4 error
		w.Percent, err1 = strconv.Atoi(values["percent"])
		w.Used, err2 = strconv.ParseInt(values["used"], 10, 64)
		w.Limit, err3 = strconv.ParseInt(values["limit"], 10, 64)
		w.Month, err4 = time.Parse("2006-01", values["month"])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || w.To == "" || w.Percent < 1 || w.Percent > 100 {
			return OutboxEntry{}, false
		}
		return OutboxEntry{Warning: &w}, true
	}
	return OutboxEntry{}, false
}

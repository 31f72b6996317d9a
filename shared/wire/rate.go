package wire

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Rate is a key's rate beside its monthly quota: at most Count calls in any
// window of Per (a second or a minute), and at most Burst of them at once.
// A record's own rate is its optional Rate field, written in the form
// String returns ("10/s", "600/m;burst=100", "off"); the zero Rate is a
// record without one (the service's default applies).
type Rate struct {
	Count int64         // calls in any window of Per, 1 to MaxRateCount; 0 with Off or unset
	Per   time.Duration // time.Second or time.Minute
	// Burst is how many calls may come at once, 1 to Count-1, after which
	// they are let in one every Per/Count; 0: Count (the window alone).
	Burst int64
	Off   bool // "off": no rate at all for this key, whatever the default
}

// MaxRateCount is the largest Count of a Rate.
const MaxRateCount = 1_000_000

// ErrRate: a rate that is not of the form <count>/<s|m>[;burst=<n>] or off.
var ErrRate = errors.New("want a rate such as 10/s, 600/m;burst=100 or off")

// On reports whether r limits calls.
func (r Rate) On() bool { return r.Count > 0 }

// BurstOrCount is how many calls may come at once.
func (r Rate) BurstOrCount() int64 {
	if r.Burst > 0 {
		return r.Burst
	}
	return r.Count
}

// String is r as a record and the environment write it: "10/s",
// "600/m;burst=100", "off", or "" for the zero Rate.
func (r Rate) String() string {
	return string(r.appendTo(nil))
}

func (r Rate) appendTo(b []byte) []byte {
	switch {
	case r.Off:
		return append(b, "off"...)
	case !r.On():
		return b
	}
	b = strconv.AppendInt(b, r.Count, 10)
	if r.Per == time.Minute {
		b = append(b, "/m"...)
	} else {
		b = append(b, "/s"...)
	}
	if r.Burst > 0 {
		b = append(b, ";burst="...)
		b = strconv.AppendInt(b, r.Burst, 10)
	}
	return b
}

// MarshalText is String's text.
func (r Rate) MarshalText() ([]byte, error) { return r.appendTo(nil), nil }

// UnmarshalText reads a rate as ParseRate does; empty text is the zero Rate.
func (r *Rate) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*r = Rate{}
		return nil
	}
	var err error
	*r, err = ParseRate(string(text))
	return err
}

// ParseRate reads a rate as String writes it: <count>/<s|m>, count 1 to
// MaxRateCount, then optionally ;burst=<n>, n 1 to count (a burst of count
// is the window alone, and reads as none); or off. Anything else is ErrRate.
func ParseRate(s string) (Rate, error) {
	if s == "off" {
		return Rate{Off: true}, nil
	}
	spec, burst, hasBurst := strings.Cut(s, ";burst=")
	n, unit, ok := strings.Cut(spec, "/")
	var per time.Duration
	switch unit {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	}
	count, ok := rateNumber(n, ok)
	if !ok || per == 0 {
		return Rate{}, ErrRate
	}
	r := Rate{Count: count, Per: per}
	if hasBurst {
		b, ok := rateNumber(burst, true)
		if !ok || b > count {
			return Rate{}, ErrRate
		}
		if b < count {
			r.Burst = b
		}
	}
	return r, nil
}

// rateNumber reads 1 to MaxRateCount in plain decimal digits (no sign, no
// leading zero), when ok.
func rateNumber(s string, ok bool) (int64, bool) {
	if !ok || s == "" || len(s) > 7 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n <= MaxRateCount
}

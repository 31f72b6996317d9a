package wire

import (
	"errors"
	"testing"
	"time"
)

type rateFixtures struct {
	Written []struct {
		Record TokenRecord `json:"record"`
		Bytes  string      `json:"bytes"`
	} `json:"written"`
	Cases []decodeCase `json:"cases"`
}

// A record with a rate of its own is written exactly as the golden bytes,
// the Rate field last and only when set, and read back the same.
func TestRateRecordEncode(t *testing.T) {
	var f rateFixtures
	load(t, "rate-records.json", &f)
	if len(f.Written) == 0 {
		t.Fatal("no written records in fixture")
	}
	for _, w := range f.Written {
		rec := w.Record
		if got := string(rec.Encode()); got != w.Bytes {
			t.Errorf("got  %s\nwant %s", got, w.Bytes)
		}
		back, err := DecodeTokenRecord(w.Bytes)
		if err != nil || back != rec {
			t.Errorf("round trip of %s: %+v %v", w.Bytes, back, err)
		}
		if _, ok := decodeCanonical(w.Bytes); !ok {
			t.Errorf("%s: not read by the fast path", w.Bytes)
		}
	}
}

// Every record shape with a Rate: read, or corrupt.
func TestRateRecordDecode(t *testing.T) {
	var f rateFixtures
	load(t, "rate-records.json", &f)
	checkDecodeCases(t, f.Cases)
}

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Rate
	}{
		{"1/s", Rate{Count: 1, Per: time.Second}},
		{"10/s", Rate{Count: 10, Per: time.Second}},
		{"600/m;burst=100", Rate{Count: 600, Per: time.Minute, Burst: 100}},
		{"600/m;burst=600", Rate{Count: 600, Per: time.Minute}},
		{"1000000/s;burst=1", Rate{Count: 1000000, Per: time.Second, Burst: 1}},
		{"off", Rate{Off: true}},
	} {
		got, err := ParseRate(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if back, _ := ParseRate(got.String()); back != got {
			t.Errorf("%q: String %q reads back as %+v", c.in, got.String(), back)
		}
	}
	for _, in := range []string{"", "10", "10/", "/s", "10/h", "10/S", "0/s", "-1/s", "+1/s", "01/s", "1.5/s", "1e3/s",
		"1000001/s", "10/s;burst=", "10/s;burst=0", "10/s;burst=11", "10/s;burst=01", "10/s;Burst=2", "10/s ;burst=2",
		" 10/s", "10/s;burst=2;burst=3", "Off", "none"} {
		if got, err := ParseRate(in); !errors.Is(err, ErrRate) {
			t.Errorf("ParseRate(%q) = %+v, %v; want ErrRate", in, got, err)
		}
	}
	for r, want := range map[Rate]int64{
		{Count: 10, Per: time.Second}:           10,
		{Count: 10, Per: time.Second, Burst: 3}: 3,
	} {
		if got := r.BurstOrCount(); got != want {
			t.Errorf("%v.BurstOrCount() = %d, want %d", r, got, want)
		}
	}
	var r Rate
	if err := r.UnmarshalText([]byte("10/h")); !errors.Is(err, ErrRate) {
		t.Errorf("UnmarshalText(10/h): %v, want ErrRate", err)
	}
	if err := r.UnmarshalText([]byte("")); err != nil || r != (Rate{}) {
		t.Errorf("UnmarshalText(\"\"): %+v %v, want the zero Rate", r, err)
	}
	if (Rate{}).String() != "" || (Rate{}).On() || (Rate{Off: true}).On() {
		t.Error("the zero Rate and off limit nothing and read as \"\" and \"off\"")
	}
}

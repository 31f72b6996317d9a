package wire

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
)

type outboxFixtures struct {
	Written struct {
		Key struct {
			Entry  KeyEmail `json:"entry"`
			Fields []string `json:"fields"`
		} `json:"key"`
		Warning struct {
			Entry     QuotaWarning `json:"entry"`
			Fields    []string     `json:"fields"`
			WarnedKey string       `json:"warned_key"`
		} `json:"warning"`
	} `json:"written"`
	Cases []struct {
		Name   string            `json:"name"`
		Fields map[string]string `json:"fields"`
		Want   json.RawMessage   `json:"want"`
	} `json:"cases"`
}

// The outbox entries auth and registration write, field for field: a
// change shows up here, not as emails a running registration cannot read.
func TestOutboxEntriesWritten(t *testing.T) {
	var f outboxFixtures
	load(t, "outbox-entries.json", &f)
	if got, want := f.Written.Key.Entry.Fields(), f.Written.Key.Fields; !slices.Equal(got, want) {
		t.Errorf("key email fields\n got %q\nwant %q", got, want)
	}
	w := f.Written.Warning
	if got := w.Entry.Fields(); !slices.Equal(got, w.Fields) {
		t.Errorf("warning fields\n got %q\nwant %q", got, w.Fields)
	}
	if got := w.Entry.WarnedKey(); got != w.WarnedKey {
		t.Errorf("warned key %q, want %q", got, w.WarnedKey)
	}
	// What is written reads back.
	for _, fields := range [][]string{f.Written.Key.Fields, w.Fields} {
		m := map[string]string{}
		for i := 0; i < len(fields); i += 2 {
			m[fields[i]] = fields[i+1]
		}
		if _, ok := ParseOutboxEntry(m); !ok {
			t.Errorf("written fields %q do not parse", fields)
		}
	}
}

func TestParseOutboxEntry(t *testing.T) {
	var f outboxFixtures
	load(t, "outbox-entries.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			got, ok := ParseOutboxEntry(c.Fields)
			if string(c.Want) == "null" {
				if ok {
					t.Fatalf("got %+v, want not ok", got)
				}
				return
			}
			var want OutboxEntry
			if err := json.Unmarshal(c.Want, &want); err != nil {
				t.Fatal(err)
			}
			if !ok || !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v %+v (%v), want %+v %+v", got.Key, got.Warning, ok, want.Key, want.Warning)
			}
		})
	}
}

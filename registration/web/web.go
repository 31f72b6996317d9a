// Package web is the signup page of registration, embedded in the binary.
package web

// Signup returns the signup page (GET /).
func Signup() []byte { return []byte("<!doctype html><title>Pesto</title>") }

// Result returns the page shown after a form POST without JavaScript:
// ok tells success from failure, message is shown to the user (escaped).
func Result(ok bool, message string) []byte { return []byte("<!doctype html><title>Pesto</title>") }

// Package web is the signup page of registration, embedded in the binary.
package web

// CSP is the Content-Security-Policy header sent with every page.
const CSP = "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Signup returns the signup page (GET /).
func Signup() []byte { return []byte("<!doctype html><title>Pesto</title>") }

// Result returns the page shown after a form POST without JavaScript:
// ok tells success from failure, message is shown to the user (escaped).
func Result(ok bool, message string) []byte { return []byte("<!doctype html><title>Pesto</title>") }

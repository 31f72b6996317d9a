// Package web is the signup page of registration, embedded in the binary:
// one HTML page with its style and script inline, and the page a plain form
// POST (JavaScript off) gets back.
package web

import (
	_ "embed"
	"html"
	"strings"
)

// CSP is the Content-Security-Policy header value sent with both pages. The
// inline style and script are allowed by their SHA-256 hashes (web_test.go
// checks them against the embedded files); the script may only fetch this
// origin and the form may only post to it.
const CSP = "default-src 'none'; " +
	"style-src 'sha256-ssSmUA5ACdp56vXBppjj+bC9Ry4BrppHOx7t8CGsq3E='; " +
	"script-src 'sha256-Gj2aJIw8iaRMi0d6sRCsomPstZj9qz4xkC8+kJ12ajo='; " +
	"img-src data:; connect-src 'self'; form-action 'self'; " +
	"base-uri 'none'; frame-ancestors 'none'"

// Confirmation is what a successful signup shows, with or without
// JavaScript. It is the same for a new and an already known email, so the
// page never reveals whether an address is on the list (signup.js holds the
// same words).
const Confirmation = "Thanks \u2014 you're on the waiting list. We'll email your key when you're approved."

var (
	//go:embed layout.html
	layout string
	//go:embed signup.html
	signupBody string
	//go:embed result.html
	resultBody string
	//go:embed style.css
	style string
	//go:embed signup.js
	script string

	// signupPage is rendered once: it has no per-request content.
	signupPage = render(map[string]string{
		"{{title}}":  html.EscapeString("Pesto \u2014 get an API key"),
		"{{body}}":   signupBody,
		"{{script}}": "<script>" + script + "</script>",
	})
)

// Signup returns the signup page (GET /). The slice is shared: callers must
// not modify it.
func Signup() []byte { return signupPage }

// Confirmed returns the page shown after a successful form POST without
// JavaScript: Confirmation, the same for a new and a known email.
func Confirmed() []byte {
	return result("You're on the waiting list", "ok", "Back to the signup page", Confirmation)
}

// Refused returns the page shown after a form POST without JavaScript that
// was refused: message, HTML-escaped.
func Refused(message string) []byte {
	return result("Your signup was not sent", "error", "Back to the signup form", message)
}

func result(title, class, back, message string) []byte {
	body := strings.NewReplacer(
		"{{title}}", html.EscapeString(title),
		"{{class}}", class,
		"{{message}}", html.EscapeString(message),
		"{{back}}", back,
	).Replace(resultBody)
	return render(map[string]string{"{{title}}": html.EscapeString(title), "{{body}}": body, "{{script}}": ""})
}

// render fills the layout. Pages are built by substitution with every
// dynamic value HTML-escaped, not with html/template: in a binary that links
// rueidis, the templates' reflective method calls keep every method of its
// command builder alive and add some 11 MB to the binary.
func render(parts map[string]string) []byte {
	pairs := []string{"{{style}}", style}
	for k, v := range parts {
		pairs = append(pairs, k, v)
	}
	return []byte(strings.NewReplacer(pairs...).Replace(layout))
}

// Package web is the signup page of registration, embedded in the binary:
// one HTML page with its style and script inline, and the page a plain form
// POST (JavaScript off) gets back.
package web

import (
	"bytes"
	_ "embed"
	"html/template"
)

// CSP is the Content-Security-Policy header value sent with both pages. The
// inline style and script are allowed by their SHA-256 hashes (web_test.go
// checks them against the embedded files); the script may only fetch this
// origin and the form may only post to it.
const CSP = "default-src 'none'; " +
	"style-src 'sha256-ssSmUA5ACdp56vXBppjj+bC9Ry4BrppHOx7t8CGsq3E='; " +
	"script-src 'sha256-gAB11sSCPbfvbTuAp7KlS3ioj8EZe5zHlAOjRJwnSPQ='; " +
	"img-src data:; connect-src 'self'; form-action 'self'; " +
	"base-uri 'none'; frame-ancestors 'none'"

// Confirmation is what a successful signup shows, with or without
// JavaScript. It is the same for a new and an already known email, so the
// page never reveals whether an address is on the list (signup.js holds the
// same words).
const Confirmation = "Thanks \u2014 you're on the waiting list. We'll email your key when you're approved."

var (
	//go:embed pages.html
	pagesHTML string
	//go:embed style.css
	style string
	//go:embed signup.js
	script string

	pages = template.Must(template.New("pages").Parse(pagesHTML))

	// signupPage is rendered once: it has no per-request content.
	signupPage = render("signup", page{Title: "Pesto \u2014 get an API key"})
)

// page is what the templates in pages.html are executed with.
type page struct {
	Title   string
	Style   template.CSS // style.css, verbatim
	Script  template.JS  // signup.js, verbatim
	OK      bool
	Message string
}

// Signup returns the signup page (GET /). The slice is shared: callers must
// not modify it.
func Signup() []byte { return signupPage }

// Result returns the page shown after a form POST without JavaScript. When
// ok it shows Confirmation and ignores message (a new and a known email
// look the same); otherwise it shows message, HTML-escaped.
func Result(ok bool, message string) []byte {
	p := page{Title: "Your signup was not sent", OK: ok, Message: message}
	if ok {
		p.Title, p.Message = "You're on the waiting list", Confirmation
	}
	return render("result", p)
}

// render executes one page. The templates are fixed and their data is
// plain strings, so execution cannot fail once the package's tests pass.
func render(name string, p page) []byte {
	p.Style, p.Script = template.CSS(style), template.JS(script)
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, p); err != nil {
		panic("web: render " + name + ": " + err.Error())
	}
	return b.Bytes()
}

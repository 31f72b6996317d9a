package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// parse parses a page and fails the test when it is not HTML.
func parse(t *testing.T, page []byte) *html.Node {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return doc
}

// all returns every element of doc named tag ("" for every element), in
// document order.
func all(doc *html.Node, tag string) []*html.Node {
	var found []*html.Node
	for n := range doc.Descendants() {
		if n.Type == html.ElementNode && (tag == "" || n.Data == tag) {
			found = append(found, n)
		}
	}
	return found
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}

func byID(t *testing.T, doc *html.Node, id string) *html.Node {
	t.Helper()
	for _, n := range all(doc, "") {
		if v, _ := attr(n, "id"); v == id {
			return n
		}
	}
	t.Fatalf("no element with id %q", id)
	return nil
}

func TestSignupForm(t *testing.T) {
	doc := parse(t, Signup())
	forms := all(doc, "form")
	if len(forms) != 1 {
		t.Fatalf("got %d forms, want 1", len(forms))
	}
	for key, want := range map[string]string{
		"action":  "/api/register",
		"method":  "post",
		"enctype": "application/x-www-form-urlencoded",
	} {
		if got, _ := attr(forms[0], key); got != want {
			t.Errorf("form %s: got %q, want %q", key, got, want)
		}
	}

	// Each field: its element, its attributes (absent ones listed as "-"),
	// and the words of its label.
	tests := []struct {
		id, tag string
		attrs   map[string]string
		label   string
	}{
		{"name", "input", map[string]string{"name": "name", "type": "text", "required": "", "maxlength": "100", "autocomplete": "name"}, "Name"},
		{"email", "input", map[string]string{"name": "email", "type": "email", "required": "", "maxlength": "254", "autocomplete": "email"}, "Email"},
		{"building", "textarea", map[string]string{"name": "building", "maxlength": "1000", "required": "-", "autocomplete": "off"}, "What are you building?"},
		{"calls", "input", map[string]string{"name": "calls", "type": "number", "required": "", "min": "0", "max": "1000000000", "step": "1", "autocomplete": "off"}, "Expected calls per month"},
	}
	labels := map[string]string{}
	for _, l := range all(doc, "label") {
		for_, _ := attr(l, "for")
		labels[for_] = text(l)
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			n := byID(t, doc, tt.id)
			if n.Data != tt.tag {
				t.Errorf("got <%s>, want <%s>", n.Data, tt.tag)
			}
			for key, want := range tt.attrs {
				got, ok := attr(n, key)
				switch {
				case want == "-" && ok:
					t.Errorf("%s: got %q, want no such attribute", key, got)
				case want != "-" && (!ok || got != want):
					t.Errorf("%s: got %q (present %v), want %q", key, got, ok, want)
				}
			}
			if got := labels[tt.id]; !strings.Contains(got, tt.label) {
				t.Errorf("label: got %q, want one containing %q", got, tt.label)
			}
		})
	}

	// Every control of the page is labelled, not only the ones above.
	for _, tag := range []string{"input", "textarea", "select"} {
		for _, n := range all(doc, tag) {
			id, _ := attr(n, "id")
			if strings.TrimSpace(labels[id]) == "" {
				t.Errorf("<%s id=%q> has no label", tag, id)
			}
		}
	}

	submit := byID(t, doc, "submit")
	if got, _ := attr(submit, "type"); submit.Data != "button" || got != "submit" {
		t.Errorf("submit: got <%s type=%q>, want <button type=\"submit\">", submit.Data, got)
	}
	status := byID(t, doc, "status")
	if got, _ := attr(status, "aria-live"); got != "polite" {
		t.Errorf("status aria-live: got %q, want polite", got)
	}
	if got, _ := attr(all(doc, "html")[0], "lang"); got != "en" {
		t.Errorf("html lang: got %q, want en", got)
	}
}

// The script and the no-JavaScript result page must say the same words.
func TestConfirmationInScript(t *testing.T) {
	if !strings.Contains(script, `"`+Confirmation+`"`) {
		t.Errorf("signup.js does not hold the confirmation %q", Confirmation)
	}
}

func TestResult(t *testing.T) {
	tests := []struct {
		name  string
		page  []byte
		want  string // text of #result
		class string
	}{
		{"confirmed", Confirmed(), Confirmation, "status ok"},
		{"field error", Refused("calls must be an integer from 0 to 1000000000"), "calls must be an integer from 0 to 1000000000", "status error"},
		{"rate limited", Refused("Too many requests"), "Too many requests", "status error"},
		{"markup is text", Refused(`<script>alert("x")</script><b>bold</b>`), `<script>alert("x")</script><b>bold</b>`, "status error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := parse(t, tt.page)
			result := byID(t, doc, "result")
			if got := text(result); got != tt.want {
				t.Errorf("text: got %q, want %q", got, tt.want)
			}
			if got, _ := attr(result, "class"); got != tt.class {
				t.Errorf("class: got %q, want %q", got, tt.class)
			}
			if n := len(all(doc, "script")) + len(all(doc, "b")); n != 0 {
				t.Errorf("got %d <script>/<b> elements, want 0 (message not escaped)", n)
			}
			back := all(doc, "a")
			if len(back) != 1 {
				t.Fatalf("got %d links, want 1", len(back))
			}
			if got, _ := attr(back[0], "href"); got != "/" {
				t.Errorf("link: got %q, want /", got)
			}
		})
	}
	if got := string(Refused("<script>")); !strings.Contains(got, "&lt;script&gt;") {
		t.Errorf("Refused(<script>) does not escape it:\n%s", got)
	}
}

// TestCSP checks that the policy allows exactly the inline style and script
// of both pages (by hash), and that the pages need nothing else: no other
// origin, no inline handlers or style attributes (the policy blocks them).
func TestCSP(t *testing.T) {
	pages := map[string][]byte{
		"signup":    Signup(),
		"result ok": Confirmed(),
		"result":    Refused("Too many requests"),
	}
	hashes := map[string]bool{}
	for name, page := range pages {
		doc := parse(t, page)
		for _, tag := range []string{"style", "script"} {
			for _, n := range all(doc, tag) {
				sum := sha256.Sum256([]byte(text(n)))
				source := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
				hashes[source] = true
				if !strings.Contains(CSP, tag+"-src "+source) {
					t.Errorf("%s: CSP does not allow its <%s>: want %s-src %s in\n%s", name, tag, tag, source, CSP)
				}
			}
		}
		for _, n := range all(doc, "") {
			for _, a := range n.Attr {
				switch {
				case strings.HasPrefix(a.Key, "on"), a.Key == "style":
					t.Errorf("%s: <%s %s> is blocked by the CSP", name, n.Data, a.Key)
				case a.Key == "src", a.Key == "href" && n.Data != "a":
					if !strings.HasPrefix(a.Val, "data:") {
						t.Errorf("%s: <%s %s=%q> loads something the CSP blocks", name, n.Data, a.Key, a.Val)
					}
				}
			}
		}
	}
	if got, want := len(hashes), 2; got != want {
		t.Errorf("got %d distinct inline blocks, want %d (one style shared by both pages, one script)", got, want)
	}
	for _, directive := range []string{"default-src 'none'", "connect-src 'self'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(CSP, directive) {
			t.Errorf("CSP lacks %q", directive)
		}
	}
	if strings.Contains(CSP, "unsafe") {
		t.Errorf("CSP allows unsafe sources: %s", CSP)
	}
}

func TestSignupIsStable(t *testing.T) {
	if !bytes.Equal(Signup(), Signup()) || !bytes.HasPrefix(Signup(), []byte("<!doctype html>")) {
		t.Error("Signup() is not one fixed HTML document")
	}
}

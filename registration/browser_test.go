package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/redis/rueidis"

	"pesto/registration/web"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// TestSignupPageInBrowser fills in the signup page in a real headless
// Chromium, with JavaScript on and off, against the real service and a real
// redis-server, and checks what the page shows and what the waiting list
// holds. With SIGNUP_SCREENSHOT=/tmp/signup.png it also saves a screenshot of
// the page after a successful signup, to look at.
func TestSignupPageInBrowser(t *testing.T) {
	rds := redistest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rds.URL})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", logs)
		}
	})
	waitHealthy(t, base)
	redis := rds.Client()
	browser := startBrowser(t)

	// A value the page's own checks would refuse (max="1000000000"): the
	// test removes the attribute, so only the server refuses it.
	const tooMany = "2000000000"
	tooManyJSON := serverMessage(t, base, "application/json",
		`{"name":"Jo","email":"jo@example.com","building":"","calls":`+tooMany+`}`)
	tooManyForm := serverMessage(t, base, "application/x-www-form-urlencoded",
		"name=Jo&email=jo%40example.com&building=&calls="+tooMany)

	tests := []struct {
		name       string
		script     bool // JavaScript on
		fields     map[string]string
		dropMax    bool   // remove max from #calls before typing
		wantStatus int64  // HTTP status of the result page (JavaScript off)
		want       string // text the page shows
		wantKind   string // "ok" or "error"
		wantStored string // the waiting-list element; "" for none
	}{
		{
			name:       "javascript on",
			script:     true,
			fields:     map[string]string{"name": "  Jane Browser ", "email": "jane@example.com", "building": `a bot for "quotes" & <tags>`, "calls": "1000"},
			want:       web.Confirmation,
			wantKind:   "ok",
			wantStored: `{"name":"Jane Browser","email":"jane@example.com","building":"a bot for \"quotes\" & <tags>","calls":1000}`,
		},
		{
			name:       "javascript off",
			fields:     map[string]string{"name": "Noscript Ned", "email": "Ned@Example.com", "building": "tests & tools", "calls": "0"},
			wantStatus: http.StatusCreated,
			want:       web.Confirmation,
			wantKind:   "ok",
			wantStored: `{"name":"Noscript Ned","email":"Ned@example.com","building":"tests & tools","calls":0}`,
		},
		{
			name:     "javascript on, a value only the server refuses",
			script:   true,
			fields:   map[string]string{"name": "Greedy Greg", "email": "greg@example.com", "calls": tooMany},
			dropMax:  true,
			want:     tooManyJSON,
			wantKind: "error",
		},
		{
			name:       "javascript off, a value only the server refuses",
			fields:     map[string]string{"name": "Greedy Gail", "email": "gail@example.com", "calls": tooMany},
			dropMax:    true,
			wantStatus: http.StatusBadRequest,
			want:       tooManyForm,
			wantKind:   "error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := openTab(t, browser, 20*time.Second, tt.script)
			page, err := chromedp.Run(ctx, chromedp.NavigateResponse(base+"/"))
			if err != nil {
				t.Fatalf("open the page: %v", err)
			}
			// The page runs under the policy the service sends: the console
			// check below then proves that the policy allows it.
			if got := header(page.Headers, "Content-Security-Policy"); page.Status != http.StatusOK || got != web.CSP {
				t.Fatalf("GET /: got %d with Content-Security-Policy %q, want 200 with %q", page.Status, got, web.CSP)
			}
			steps := []chromedp.Action[chromedp.Void]{chromedp.WaitVisible(chromedp.ID("submit"))}
			if tt.dropMax {
				steps = append(steps, chromedp.RemoveAttribute(chromedp.ID("calls"), "max"))
			}
			for _, id := range []string{"name", "email", "building", "calls"} {
				if v := tt.fields[id]; v != "" {
					steps = append(steps, chromedp.SendKeys(chromedp.ID(id), v))
				}
			}
			if err := chromedp.Do(ctx, steps...); err != nil {
				t.Fatalf("fill in the form: %v", err)
			}

			var shown, kind string
			if tt.script {
				// The script answers in place: the page stays at /.
				if err := chromedp.Do(ctx,
					chromedp.Click(chromedp.ID("submit")),
					chromedp.WaitVisible(chromedp.CSS("#status."+tt.wantKind)),
				); err != nil {
					t.Fatalf("submit: %v", err)
				}
				shown, kind = textAndKind(t, ctx, "status")
				if got, want := pageLocation(t, ctx), base+"/"; got != want {
					t.Errorf("location: got %s, want %s", got, want)
				}
				if tt.wantKind == "ok" {
					if got := fieldValue(t, ctx, "name"); got != "" {
						t.Errorf("name after success: got %q, want the form reset", got)
					}
				}
			} else {
				// The browser posts the form and shows the page the server answers.
				resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("submit")))
				if err != nil {
					t.Fatalf("submit: %v", err)
				}
				if resp.Status != tt.wantStatus {
					t.Errorf("status: got %d, want %d", resp.Status, tt.wantStatus)
				}
				if got, want := pageLocation(t, ctx), base+"/api/register"; got != want {
					t.Errorf("location: got %s, want %s", got, want)
				}
				shown, kind = textAndKind(t, ctx, "result")
			}
			if shown != tt.want || kind != "status "+tt.wantKind {
				t.Errorf("page shows %q (class %q), want %q (class %q)", shown, kind, tt.want, "status "+tt.wantKind)
			}

			list := storedSignups(t, redis)
			if tt.wantStored != "" {
				got := 0
				for _, e := range list {
					if e == tt.wantStored {
						got++
					}
				}
				if got != 1 {
					t.Errorf("waiting list holds %s %d times, want once; list:\n%s", tt.wantStored, got, strings.Join(list, "\n"))
				}
			} else {
				for _, e := range list {
					if strings.Contains(strings.ToLower(e), strings.ToLower(tt.fields["email"])) {
						t.Errorf("waiting list holds a refused signup: %s", e)
					}
				}
			}

			if path := os.Getenv("SIGNUP_SCREENSHOT"); path != "" && tt.script && tt.wantKind == "ok" {
				png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// waitHealthy polls /healthz until it answers 200: the service has
// connected to Redis.
func waitHealthy(t *testing.T, base string) {
	t.Helper()
	servicetest.Poll(t, 10*time.Second, "/healthz answers 200", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// startBrowser starts headless Chromium for the test and returns the
// context that tabs are opened from. A missing browser fails the test.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// No user-data-dir: chromedp makes a temporary one and removes it
		// when the browser exits.
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	// The first Run binds the browser's life to its context: that context
	// has the deadline of the whole browser, and each tab has its own.
	life, cancelLife := context.WithTimeout(context.Background(), 2*time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc(); cancelLife() })
	if err := chromedp.Do(browser); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return browser
}

// openTab opens a tab of browser for the rest of the test, with JavaScript
// on or off and a deadline of timeout. When the test ends, every CSP
// violation or uncaught exception its console reported fails it (so that
// it also tells why a step timed out).
func openTab(t *testing.T, browser context.Context, timeout time.Duration, script bool) context.Context {
	t.Helper()
	tab, cancelTab := chromedp.NewContext(browser)
	ctx, cancel := context.WithTimeout(tab, timeout)
	console := watchConsole(ctx)
	t.Cleanup(func() {
		for _, m := range console() {
			t.Errorf("browser console: %s", m)
		}
		cancel()
		cancelTab()
	})
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled,
		emulation.SetScriptExecutionDisabledParams{Value: !script}); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// serverMessage posts body straight to /api/register and returns the
// message of its 400 answer, so the test knows what the page must show.
func serverMessage(t *testing.T, base, contentType, body string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/api/register", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct{ Message string }
	if err := json.Unmarshal(raw, &answer); resp.StatusCode != http.StatusBadRequest || err != nil {
		t.Fatalf("POST %s: got %d %s, want 400 and a JSON message", contentType, resp.StatusCode, raw)
	}
	if !strings.Contains(answer.Message, "calls") {
		t.Fatalf("POST %s: message %q does not name the field calls", contentType, answer.Message)
	}
	return answer.Message
}

// watchConsole collects the CSP violations and uncaught exceptions that the
// tab reports on its console; the returned func lists them so far. (A 400
// answer to the script's fetch is logged too, and is expected.)
func watchConsole(ctx context.Context) func() []string {
	var mu sync.Mutex
	var lines []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if !m.IsException() && !strings.Contains(m.Text, "Content Security Policy") {
				continue
			}
			mu.Lock()
			lines = append(lines, string(m.Type)+": "+m.Text)
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lines)
	}
}

// header returns a response header's value, the name matched ignoring case.
func header(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

// textAndKind returns the text and the class of the element with that id.
func textAndKind(t *testing.T, ctx context.Context, id string) (text, class string) {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("text of #%s: %v", id, err)
	}
	attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID(id), "class"))
	if err != nil {
		t.Fatalf("class of #%s: %v", id, err)
	}
	return strings.TrimSpace(text), attr.Value
}

func pageLocation(t *testing.T, ctx context.Context) string {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func fieldValue(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID(id)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// storedSignups returns the waiting list, oldest first.
func storedSignups(t *testing.T, c rueidis.Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := c.Do(ctx, c.B().Lrange().Key("waiting-list").Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestProofOfWorkInBrowser: with the signup cap used up by other clients,
// the page (JavaScript on) gets the 429 of the global cap, answers its
// challenge in the browser and signs up; it logs how long that took. The
// form without JavaScript gets the 429 page: it works whenever the cap
// has room, not while someone pushes on it.
func TestProofOfWorkInBrowser(t *testing.T) {
	rds := redistest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rds.URL, "TRUSTED_PROXIES": "127.0.0.1",
		"REGISTER_RATE": "2/h", "REGISTER_GLOBAL_RATE": "10/h", "IPV6_RATE_PREFIXES": "64:1"})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", logs)
		}
	})
	waitHealthy(t, base)
	for i := range 10 { // other clients use up the cap
		body := `{"name":"a","email":"pusher` + strconv.Itoa(i) + `@example.com","calls":1}`
		send(t, "POST", base+"/api/register", body, "X-Forwarded-For", "198.51.100."+strconv.Itoa(i+1)).want(t, 201, created)
	}
	browser := startBrowser(t)

	for _, script := range []bool{true, false} {
		t.Run(fmt.Sprintf("javascript %v", script), func(t *testing.T) {
			ctx := openTab(t, browser, 60*time.Second, script)
			email := fmt.Sprintf("person-%v@example.com", script)
			if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("submit")),
				chromedp.SendKeys(chromedp.ID("name"), "A Person"), chromedp.SendKeys(chromedp.ID("email"), email),
				chromedp.SendKeys(chromedp.ID("calls"), "10")); err != nil {
				t.Fatalf("fill in the form: %v", err)
			}
			if !script {
				resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("submit")))
				if err != nil {
					t.Fatalf("submit: %v", err)
				}
				if text, _ := textAndKind(t, ctx, "result"); resp.Status != http.StatusTooManyRequests || text != "Too many requests" {
					t.Fatalf("without JavaScript: %d %q, want the 429 page", resp.Status, text)
				}
				return
			}
			start := time.Now()
			if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.CSS("#status.ok"))); err != nil {
				shown, kind := textAndKind(t, ctx, "status")
				t.Fatalf("submit: %v; the page shows %q (%s)", err, shown, kind)
			}
			t.Logf("signed up past the used-up cap in %v (the challenge answered in the browser)", time.Since(start).Round(time.Millisecond))
			if !slices.ContainsFunc(storedSignups(t, rds.Client()), func(e string) bool { return strings.Contains(e, email) }) {
				t.Fatal("the signup is not on the waiting list")
			}
			if n := len(rds.Keys("pesto:ratelimit:{register}:proof:*")); n != 1 {
				t.Fatalf("%d answers used, want 1", n)
			}
		})
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pesto/registration/internal/outbox"
	"pesto/registration/internal/smtptest"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// End to end: the service started through run(), an approve through the
// HTTP API with an admin JWT, the email received by a real SMTP server.

// approveToken approves email through base and returns the key it answers.
func approveToken(t *testing.T, base, body string) string {
	t.Helper()
	res := send(t, "PUT", base+"/api/approve", body, "Authorization", adminBearer(t, "alice"))
	if res.status != 200 {
		t.Fatalf("approve %s: %d %s", body, res.status, res.body)
	}
	var v struct{ Message, Token string }
	if err := json.Unmarshal([]byte(res.body), &v); err != nil || v.Message != "OK" || v.Token == "" {
		t.Fatalf("approve %s: body %s", body, res.body)
	}
	return v.Token
}

func TestApproveSendsKeyEmail(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	base, logs := startRegistration(t, map[string]string{
		"REDIS_URL":    rs.URL,
		"SMTP_URL":     srv.URL("tls=none"),
		"MAIL_FROM":    "Pesto Keys <keys@example.org>",
		"MAIL_SUBJECT": "Here is your key",
	})
	rs.Do("RPUSH", "waiting-list", `{"name":"<b>x</b>","email":"Jane@Example.com","building":"a bot","calls":1000}`)

	token := approveToken(t, base, `{"email":"jane@example.com","limit":250}`)
	got := srv.WaitReceived(t, 1, 10*time.Second)
	if got[0].From != "keys@example.org" || got[0].To != "Jane@Example.com" {
		t.Errorf("envelope %q -> %q, want keys@example.org -> Jane@Example.com", got[0].From, got[0].To)
	}
	m := smtptest.ParseMail(t, got[0].Data)
	if s := m.Header.Get("Subject"); s != "Here is your key" {
		t.Errorf("Subject %q, want %q", s, "Here is your key")
	}
	if f := m.Header.Get("From"); f != `"Pesto Keys" <keys@example.org>` {
		t.Errorf("From %q", f)
	}
	for part, body := range map[string]string{"text": m.Text, "html": m.HTML} {
		for _, want := range []string{"X-Pesto-Token: " + token, "250 calls per calendar month"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", part, want, body)
			}
		}
	}
	if !strings.Contains(m.HTML, "Hello &lt;b&gt;x&lt;/b&gt;,") || strings.Contains(m.HTML, "<b>x</b>") {
		t.Errorf("HTML part does not escape the name:\n%s", m.HTML)
	}
	servicetest.Poll(t, 5*time.Second, "the outbox is empty", func() bool { return rs.Do("XLEN", outbox.Stream) == "0" })

	// The same approve again: the key exists, nothing is queued or sent.
	send(t, "PUT", base+"/api/approve", `{"email":"jane@example.com","limit":250,"token":"`+token+`"}`,
		"Authorization", adminBearer(t, "alice")).want(t, 400, `{"message":"Token already exists"}`)
	send(t, "PUT", base+"/api/approve", `{"email":"jane@example.com","limit":250}`,
		"Authorization", adminBearer(t, "alice")).want(t, 400, `{"message":"Email does not exists"}`)
	if got := rs.Do("XLEN", outbox.Stream); got != "0" {
		t.Errorf("XLEN outbox = %s after the repeats, want 0", got)
	}

	servicetest.Poll(t, 5*time.Second, "/metrics shows one email sent and an empty outbox", func() bool {
		metrics := send(t, "GET", base+"/metrics", "").body
		return strings.Contains(metrics, "\npesto_emails_sent_total 1\n") && strings.Contains(metrics, "\npesto_outbox_depth 0\n")
	})
	if n := len(srv.Received()); n != 1 {
		t.Errorf("received %d emails, want 1", n)
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("a log holds the whole key")
	}
}

func TestTwoInstancesSendEachEmailOnce(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	env := map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")}
	baseA, _ := startRegistration(t, env)
	baseB, _ := startRegistration(t, env)

	const n = 20
	for i := range n {
		rs.Do("RPUSH", "waiting-list", fmt.Sprintf(`{"name":"User %d","email":"user%d@example.com","building":"","calls":1}`, i, i))
	}
	// Approves through both instances at once.
	var wg sync.WaitGroup
	tokens := make([]string, n)
	for i := range n {
		base := baseA
		if i%2 == 1 {
			base = baseB
		}
		wg.Go(func() {
			res := send(t, "PUT", base+"/api/approve", fmt.Sprintf(`{"email":"user%d@example.com","limit":10}`, i),
				"Authorization", adminBearer(t, "alice"))
			var v struct{ Token string }
			if res.status != 200 || json.Unmarshal([]byte(res.body), &v) != nil {
				t.Errorf("approve user%d: %d %s", i, res.status, res.body)
			}
			tokens[i] = v.Token
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	srv.WaitReceived(t, n, 15*time.Second)
	servicetest.Poll(t, 5*time.Second, "the outbox is empty and nothing is pending", func() bool {
		return rs.Do("XLEN", outbox.Stream) == "0" && pendingCount(t, rs) == 0
	})
	got := srv.Received()
	if len(got) != n {
		t.Fatalf("received %d emails, want %d", len(got), n)
	}
	byTo := map[string]int{}
	for _, m := range got {
		byTo[m.To]++
		p := smtptest.ParseMail(t, m.Data)
		var i int
		if _, err := fmt.Sscanf(m.To, "user%d@example.com", &i); err != nil || i < 0 || i >= n {
			t.Fatalf("email to %q", m.To)
		}
		if !strings.Contains(p.Text, "X-Pesto-Token: "+tokens[i]) {
			t.Errorf("email to %s does not carry its key", m.To)
		}
	}
	for i := range n {
		if c := byTo[fmt.Sprintf("user%d@example.com", i)]; c != 1 {
			t.Errorf("user%d received %d emails, want 1", i, c)
		}
	}
}

func TestApproveWithoutSMTPKeepsEmail(t *testing.T) {
	rs := redistest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	rs.Do("RPUSH", "waiting-list", `{"name":"Jane","email":"jane@example.com","building":"","calls":1}`)
	approveToken(t, base, `{"email":"jane@example.com","limit":5}`)
	servicetest.Poll(t, 10*time.Second, "/metrics shows the waiting email", func() bool {
		return strings.Contains(send(t, "GET", base+"/metrics", "").body, "\npesto_outbox_depth 1\n")
	})
	if got := rs.Do("XLEN", outbox.Stream); got != "1" {
		t.Errorf("XLEN outbox = %s, want 1", got)
	}
	if !strings.Contains(logs.String(), "SMTP_URL is empty") {
		t.Errorf("no warning about SMTP_URL:\n%s", logs)
	}
}

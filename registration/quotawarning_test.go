package main

import (
	"mime"
	"strings"
	"testing"
	"time"

	"pesto/registration/internal/outbox"
	"pesto/registration/internal/smtptest"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// Quota warnings queued by auth (wire.QuotaWarning, field for field) are
// delivered by the outbox like key emails, to a real SMTP server.
func TestQuotaWarningEmails(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")})
	nov := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, w := range []wire.QuotaWarning{
		{To: "Jane&Co@Example.com", Percent: 80, Used: 800, Limit: 1000, Month: nov},
		{To: "Jane&Co@Example.com", Percent: 100, Used: 1000, Limit: 1000, Month: nov},
	} {
		rs.Do(append([]string{"XADD", outbox.Stream, "*"}, w.Fields()...)...)
	}
	got := srv.WaitReceived(t, 2, 10*time.Second)
	want := []struct{ subject, text string }{
		{"You have used 80% of your Pesto API calls for November 2026",
			"the Pesto API keys of Jane&Co@Example.com have used 800 of their 1000 calls of November 2026 (UTC): 80%."},
		{"Your Pesto API calls for November 2026 are used up",
			"the Pesto API keys of Jane&Co@Example.com have used all 1000 calls of November 2026 (UTC)."},
	}
	for i, w := range want {
		// The stream is read in order by the one worker.
		if got[i].To != "Jane&Co@Example.com" {
			t.Errorf("email %d to %q", i, got[i].To)
		}
		m := smtptest.ParseMail(t, got[i].Data)
		subject, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if subject != w.subject {
			t.Errorf("email %d: Subject %q, want %q", i, subject, w.subject)
		}
		if !strings.Contains(m.Text, w.text) || !strings.Contains(m.Text, "December 1, 2026 (UTC)") {
			t.Errorf("email %d text:\n%s\nwant %q and the reset date", i, m.Text, w.text)
		}
		if !strings.Contains(m.HTML, "Jane&amp;Co@Example.com") || strings.Contains(m.HTML, "Jane&Co") {
			t.Errorf("email %d: the HTML part does not escape the address:\n%s", i, m.HTML)
		}
	}
	servicetest.Poll(t, 5*time.Second, "the outbox is empty", func() bool { return rs.Do("XLEN", outbox.Stream) == "0" })
}

// Nothing is sent to a trial key's made-up address, whoever queued it (an
// auth older than this release, an admin's rotation of a trial key): the
// entries are dropped, not retried nor dead-lettered, and the emails of
// people around them go out.
func TestNoEmailToTrialAddresses(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")})
	nov := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	const trialTo = "trial-AbCdEfGhIj0123456789@pesto.teknologiumum.com"
	for _, fields := range [][]string{
		wire.QuotaWarning{To: trialTo, Percent: 80, Used: 8, Limit: 10, Month: nov}.Fields(),
		wire.KeyEmail{To: trialTo, Name: trialTo, Token: "new-key", Limit: 10}.Fields(),
		wire.QuotaWarning{To: "person@example.com", Percent: 100, Used: 10, Limit: 10, Month: nov}.Fields(),
	} {
		rs.Do(append([]string{"XADD", outbox.Stream, "*"}, fields...)...)
	}
	got := srv.WaitReceived(t, 1, 10*time.Second)
	servicetest.Poll(t, 5*time.Second, "the outbox is empty", func() bool { return rs.Do("XLEN", outbox.Stream) == "0" })
	if len(srv.Received()) != 1 || got[0].To != "person@example.com" {
		t.Fatalf("sent %d emails, the first to %q; want only person@example.com's", len(srv.Received()), got[0].To)
	}
	if n := rs.Do("XLEN", outbox.Dead); n != "0" {
		t.Fatalf("%s dead letters, want none", n)
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pesto/registration/internal/outbox"
	"pesto/registration/internal/smtptest"
	"pesto/registration/internal/waitlist"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// Faults: the process killed between approve's steps, an SMTP server that
// comes and goes, Redis restarted under traffic. In each, nothing is lost,
// nothing is sent twice, and nobody gets a key that was not approved.

// try makes one request and returns the error instead of failing the test,
// for requests that may meet a killed server, and for goroutines.
func try(method, url, body string, headers ...string) (response, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := testClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}, nil
}

// mainProcess is the registration command running as its own process (the
// test binary re-executed as main, see TestMain).
type mainProcess struct {
	cmd  *exec.Cmd
	base string
	logs *servicetest.LogBuffer
	done chan struct{}
}

// startMain starts the registration command with env (REDIS_URL required;
// the defaults of startRegistration otherwise) on a free port, and waits
// until it answers HTTP. The process is stopped when the test ends.
func startMain(t *testing.T, env map[string]string) *mainProcess {
	t.Helper()
	port := redistest.FreePort(t)
	cmd := servicetest.MainCommand(servicetest.Merge(testEnv(env), map[string]string{"PORT": strconv.Itoa(port)}))
	p := &mainProcess{cmd: cmd, base: "http://127.0.0.1:" + strconv.Itoa(port), logs: new(servicetest.LogBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	exited := false
	servicetest.Poll(t, 10*time.Second, "registration serves", func() bool {
		select {
		case <-p.done:
			exited = true
			return true
		default:
		}
		_, err := try("GET", p.base+"/healthz", "")
		return err == nil
	})
	if exited {
		t.Fatalf("registration exited before serving:\n%s", p.logs)
	}
	return p
}

// kill ends the process with SIGKILL: no drain, no deferred code.
func (p *mainProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// redisState is what approvals left in Redis.
type redisState struct {
	records  map[string][]string // UserEmail (lower-cased) -> the keys of its records
	markers  []string            // approving keys
	listed   []string            // emails on the waiting list, lower-cased
	outbox   map[string][]string // "to" (lower-cased) -> tokens queued
	outboxN  int
	deadN    string
	original map[string]string // record key -> record bytes
}

func readState(t *testing.T, rs *redistest.Server) redisState {
	t.Helper()
	st := redisState{records: map[string][]string{}, outbox: map[string][]string{}, original: map[string]string{}}
	for _, k := range dataKeys(t, rs) {
		switch {
		case k == wire.WaitingList:
		case strings.HasPrefix(k, waitlist.ApprovingPrefix):
			st.markers = append(st.markers, k)
		case strings.HasPrefix(k, wire.OwnPrefix):
			t.Fatalf("unexpected key %q", k)
		default:
			raw := rs.Do("GET", k)
			rec, err := wire.DecodeTokenRecord(raw)
			if err != nil {
				t.Fatalf("key %q holds %q: %v", k, raw, err)
			}
			email := strings.ToLower(rec.UserEmail)
			st.records[email] = append(st.records[email], k)
			st.original[k] = raw
		}
	}
	for _, raw := range rs.DoList("LRANGE", wire.WaitingList, "0", "-1") {
		s, err := wire.DecodeSignup(raw)
		if err != nil {
			t.Fatalf("waiting list holds %q", raw)
		}
		st.listed = append(st.listed, strings.ToLower(s.Email))
	}
	for _, e := range outboxEntries(t, rs) {
		st.outbox[strings.ToLower(e["to"])] = append(st.outbox[strings.ToLower(e["to"])], e["token"])
		st.outboxN++
	}
	st.deadN = rs.Do("XLEN", outbox.Dead)
	return st
}

var keyInEmail = regexp.MustCompile(`X-Pesto-Token: ([^\s<]+)`)

// emailsByKey counts received key emails by recipient and the key they
// carry ("to key"), checking that both parts carry the same key.
func emailsByKey(t *testing.T, got []smtptest.Mail) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range got {
		p := smtptest.ParseMail(t, m.Data)
		k := keyInEmail.FindStringSubmatch(p.Text)
		if k == nil || !strings.Contains(p.HTML, "X-Pesto-Token: "+k[1]) {
			t.Fatalf("email to %s does not carry one key in both parts:\n%s", m.To, p.Text)
		}
		out[strings.ToLower(m.To)+" "+k[1]]++
	}
	return out
}

// The exact Redis states a kill between approve's steps leaves, and the
// completed state: a repeated approve finishes the first attempt, and the
// user receives exactly one email, with the first attempt's key.
func TestApproveRepeatedAfterKillBetweenSteps(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	type step int
	const (
		markerOnly step = iota
		markerAndRecord
		completed
	)
	cases := []struct {
		name       string
		state      step
		repeat     string // the repeated approve's token field
		wantStatus int
		wantLimit  string
	}{
		{"marker only, no token", markerOnly, ``, 200, "50"},
		{"marker only, another token", markerOnly, `,"token":"another-key"`, 200, "50"},
		{"marker and record, no token", markerAndRecord, ``, 200, "20"},
		{"marker and record, same token", markerAndRecord, `,"token":"KEY"`, 200, "20"},
		{"marker and record, another token", markerAndRecord, `,"token":"another-key"`, 200, "20"},
		{"completed, no token", completed, ``, 400, "20"},
	}
	for i, c := range cases {
		email := fmt.Sprintf("crash%d@example.com", i)
		key := fmt.Sprintf("first-key-%d", i)
		signup := `{"name":"Crash ` + strconv.Itoa(i) + `","email":"` + email + `","building":"","calls":1}`
		record := `{"UserEmail":"` + email + `","MonthlyLimit":20,"Revoked":false}`
		switch c.state {
		case markerOnly:
			rs.Do("RPUSH", wire.WaitingList, signup)
			rs.Do("SET", waitlist.ApprovingKey(email), key)
		case markerAndRecord:
			rs.Do("RPUSH", wire.WaitingList, signup)
			rs.Do("SET", waitlist.ApprovingKey(email), key)
			rs.Do("SET", key, record)
		case completed:
			rs.Do("SET", key, record)
			k := wire.KeyEmail{To: email, Name: "Crash " + strconv.Itoa(i), Token: key, Limit: 20}
			rs.Do(append([]string{"XADD", outbox.Stream, "*"}, k.Fields()...)...)
		}
		body := `{"email":"` + email + `","limit":50` + strings.ReplaceAll(c.repeat, "KEY", key) + `}`
		r := send(t, "PUT", base+"/api/approve", body, auth...)
		switch c.wantStatus {
		case 200:
			if got := tokenOf(t, r); got != key {
				t.Errorf("%s: token %q, want the first attempt's %q", c.name, got, key)
			}
		default:
			r.want(t, 400, `{"message":"Email does not exists"}`)
		}
		if got, want := rs.Do("GET", key), strings.Replace(record, ":20,", ":"+c.wantLimit+",", 1); got != want {
			t.Errorf("%s: record %s, want %s", c.name, got, want)
		}
	}

	got := srv.WaitReceived(t, len(cases), 10*time.Second)
	servicetest.Poll(t, 5*time.Second, "the outbox is empty", func() bool { return rs.Do("XLEN", outbox.Stream) == "0" })
	byKey := emailsByKey(t, got)
	for i := range cases {
		k := fmt.Sprintf("crash%d@example.com first-key-%d", i, i)
		if byKey[k] != 1 {
			t.Errorf("%s: %d emails %q, want 1 (all: %v)", cases[i].name, byKey[k], k, byKey)
		}
	}
	if len(got) != len(cases) {
		t.Errorf("%d emails, want %d", len(got), len(cases))
	}
	st := readState(t, rs)
	if len(st.listed) != 0 || len(st.markers) != 0 || len(st.records) != len(cases) || st.deadN != "0" {
		t.Errorf("left: listed %v, markers %v, %d records, dead %s", st.listed, st.markers, len(st.records), st.deadN)
	}
}

// A reject after a crashed approve (approving key and maybe the record
// written, no email queued): the signup, the approving key and the record
// it names all go, since that key was never delivered. A record the
// approving key names that is someone else's stays.
func TestRejectAfterCrashedApprove(t *testing.T) {
	rs := redistest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "carol")}
	const janeRecord = `{"UserEmail":"Jane@example.com","MonthlyLimit":20,"Revoked":false}`
	const otherRecord = `{"UserEmail":"other@example.com","MonthlyLimit":5,"Revoked":false}`
	for _, c := range []struct {
		name        string
		listed      bool
		record      string // the record under the approving key's token, "" none
		status      int
		body        string
		wantKeys    string // data keys left
		wantDeleted bool   // the log names the deleted key
	}{
		{"approving key and record", true, janeRecord, 200, `{"message":"OK"}`, "[]", true},
		{"approving key only", true, "", 200, `{"message":"OK"}`, "[]", false},
		{"revoked record", true, strings.Replace(janeRecord, "false", "true", 1), 200, `{"message":"OK"}`, "[]", true},
		{"someone else's record", true, otherRecord, 200, `{"message":"OK"}`, "[half-key]", false},
		// A reject that died after removing the signup: repeating it
		// finishes the clean-up, and says the email is not listed.
		{"signup already removed", false, janeRecord, 400, `{"message":"Email does not exists"}`, "[]", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, k := range dataKeys(t, rs) {
				rs.Do("DEL", k)
			}
			before := len(logs.String())
			if c.listed {
				rs.Do("RPUSH", wire.WaitingList, `{"name":"Jane","email":"Jane@example.com","building":"","calls":1}`)
			}
			rs.Do("RPUSH", wire.WaitingList, `{"name":"Bob","email":"bob@example.com","building":"","calls":1}`)
			rs.Do("SET", waitlist.ApprovingKey("jane@example.com"), "half-key")
			if c.record != "" {
				rs.Do("SET", "half-key", c.record)
			}

			send(t, "PUT", base+"/api/reject", `{"email":"JANE@example.com "}`, auth...).want(t, c.status, c.body)
			keys := slices.DeleteFunc(dataKeys(t, rs), func(k string) bool { return k == wire.WaitingList })
			if got := fmt.Sprint(keys); got != c.wantKeys {
				t.Fatalf("keys %s, want %s", got, c.wantKeys)
			}
			if got := rs.DoList("LRANGE", wire.WaitingList, "0", "-1"); len(got) != 1 || !strings.Contains(got[0], "bob@") {
				t.Fatalf("waiting list %q, want only Bob's signup", got)
			}
			if n := len(outboxEntries(t, rs)); n != 0 {
				t.Fatalf("%d emails queued", n)
			}
			l := logs.String()[before:]
			if got := strings.Contains(l, "never-delivered key"); got != c.wantDeleted {
				t.Fatalf("deletion logged: %v, want %v:\n%s", got, c.wantDeleted, l)
			}
			if strings.Contains(l, "half-key") {
				t.Fatal("the whole key is logged")
			}
			// The other person is untouched, and an approve of Jane now
			// finds nothing to complete.
			send(t, "PUT", base+"/api/approve", `{"email":"jane@example.com","limit":5}`, auth...).
				want(t, 400, `{"message":"Email does not exists"}`)
		})
	}
}

// SIGKILL of the real process in the middle of bursts of approves, then a
// restart and every approve repeated: each signup ends with exactly one
// record, one queued email and one email received carrying that record's
// key, and no signup or approving key is left.
//
// The killed processes run without SMTP_URL, so that no email is in an
// SMTP transaction when they die: a worker killed after the SMTP server
// accepted an email but before it is acknowledged leaves it pending, and
// another worker sends it again after the outbox's MinIdle (2 minutes;
// TestOutboxReclaimsCrashedWorker covers that path). This test is about
// approve's steps.
func TestApproveSurvivesSIGKILL(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.New(t) // started once every approve is repeated
	auth := []string{"Authorization", adminBearer(t, "alice")}
	const perRound = 20
	// When each round's process is killed: as soon as an approve is seen
	// between its steps in Redis (an approving key exists), or as soon as
	// the first approve is answered.
	killWhen := []string{"approving key seen", "first answer", "approving key seen", "approving key seen"}
	var emails []string
	answered := map[string]string{} // email -> token an approve answered before its kill
	var mu sync.Mutex
	// A long waiting list ahead of the approved signups, as production may
	// have: each approve's scripts scan it, which keeps approves in flight
	// long enough for the kill to land among them.
	const waiting = 5000
	fillers := []string{"RPUSH", wire.WaitingList}
	for i := range waiting {
		fillers = append(fillers, fmt.Sprintf(`{"name":"W","email":"waiting%d@example.com","building":"","calls":1}`, i))
	}
	rs.Do(fillers...)
	for round, when := range killWhen {
		var batch []string
		for i := range perRound {
			e := fmt.Sprintf("k%du%d@example.com", round, i)
			batch = append(batch, e)
			rs.Do("RPUSH", wire.WaitingList, fmt.Sprintf(`{"name":"User %d.%d","email":"%s","building":"","calls":1}`, round, i, e))
		}
		emails = append(emails, batch...)
		p := startMain(t, map[string]string{"REDIS_URL": rs.URL})
		var oks atomic.Int32
		var wg sync.WaitGroup
		for _, e := range batch {
			wg.Go(func() {
				r, err := try("PUT", p.base+"/api/approve", `{"email":"`+e+`","limit":10}`, auth...)
				if err != nil {
					return // killed in flight
				}
				if r.status != 200 {
					t.Errorf("approve %s before the kill: %d %s", e, r.status, r.body)
					return
				}
				var v struct{ Token string }
				_ = json.Unmarshal([]byte(r.body), &v)
				mu.Lock()
				answered[e] = v.Token
				mu.Unlock()
				oks.Add(1)
			})
		}
		servicetest.Poll(t, 10*time.Second, "round "+strconv.Itoa(round)+": "+when, func() bool {
			// An answer ends the wait either way: the approves may all
			// pass between two looks.
			return oks.Load() > 0 || (when != "first answer" && len(rs.Keys(waitlist.ApprovingPrefix+"k"+strconv.Itoa(round)+"u*")) > 0)
		})
		p.kill(t)
		wg.Wait()
		st := readState(t, rs)
		listed, markers := 0, 0
		for _, e := range batch {
			if slices.Contains(st.listed, e) {
				listed++
			}
			if slices.Contains(st.markers, waitlist.ApprovingKey(e)) {
				markers++
			}
		}
		t.Logf("round %d: killed at %s; of %d approves %d answered, %d completed, %d left between steps",
			round, when, perRound, oks.Load(), perRound-listed, markers)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Restarted, with SMTP (the server still down): repeat every approve.
	p := startMain(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")})
	tokens := map[string]string{}
	for _, e := range emails {
		r := send(t, "PUT", p.base+"/api/approve", `{"email":"`+e+`","limit":10}`, auth...)
		switch r.status {
		case 200:
			tokens[e] = tokenOf(t, r)
		case 400:
			r.want(t, 400, `{"message":"Email does not exists"}`) // completed before the kill
		default:
			t.Fatalf("repeated approve of %s: %d %s", e, r.status, r.body)
		}
	}
	st := readState(t, rs)
	if len(st.listed) != waiting || slices.ContainsFunc(st.listed, func(e string) bool { return !strings.HasPrefix(e, "waiting") }) ||
		len(st.markers) != 0 || st.outboxN != len(emails) {
		t.Fatalf("after the repeats: %d listed (want the %d others), approving keys %v, %d queued (want %d)",
			len(st.listed), waiting, st.markers, st.outboxN, len(emails))
	}
	for _, e := range emails {
		recs, queued := st.records[e], st.outbox[e]
		if len(recs) != 1 || len(queued) != 1 || queued[0] != recs[0] {
			t.Errorf("%s: records %v, queued %v; want one record and one email with its key", e, recs, queued)
			continue
		}
		if tok, ok := tokens[e]; ok && tok != recs[0] {
			t.Errorf("%s: the repeat answered %q, the record is %q", e, tok, recs[0])
		}
		if tok, ok := answered[e]; ok && tok != recs[0] {
			t.Errorf("%s: answered %q before the kill, the record is %q", e, tok, recs[0])
		}
		if got, want := st.original[recs[0]], `{"UserEmail":"`+e+`","MonthlyLimit":10,"Revoked":false}`; got != want {
			t.Errorf("%s: record %s, want %s", e, got, want)
		}
	}
	if len(st.records) != len(emails) {
		t.Errorf("records of %d people, want %d", len(st.records), len(emails))
	}

	srv.Start()
	got := srv.WaitReceived(t, len(emails), 20*time.Second)
	servicetest.Poll(t, 10*time.Second, "the outbox is empty and nothing is pending", func() bool {
		return rs.Do("XLEN", outbox.Stream) == "0" && pendingCount(t, rs) == 0
	})
	byKey := emailsByKey(t, srv.Received())
	for _, e := range emails {
		if n := byKey[e+" "+st.records[e][0]]; n != 1 {
			t.Errorf("%s received %d emails with its key, want 1", e, n)
		}
	}
	if len(srv.Received()) != len(emails) || len(got) != len(emails) {
		t.Errorf("%d emails received, want %d", len(srv.Received()), len(emails))
	}
	if n := rs.Do("XLEN", outbox.Dead); n != "0" {
		t.Errorf("dead-letter stream holds %s", n)
	}
}

// The SMTP server up and down every second for 20 s while 50 approvals
// are made and queued: every email arrives exactly once, the outbox and the
// dead-letter stream end empty.
func TestOutboxSMTPFlapping(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none"), "MAIL_MAX_ATTEMPTS": "3"})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	const n = 50
	const flaps = 20
	for i := range n {
		rs.Do("RPUSH", wire.WaitingList, fmt.Sprintf(`{"name":"Flap %d","email":"flap%d@example.com","building":"","calls":1}`, i, i))
	}
	tokens := make([]string, n)
	approved := make(chan struct{})
	go func() {
		defer close(approved)
		// Spread over the flapping, so that emails are queued while the
		// server is up and while it is down.
		for i := range n {
			r, err := try("PUT", base+"/api/approve", fmt.Sprintf(`{"email":"flap%d@example.com","limit":10}`, i), auth...)
			if err != nil || r.status != 200 {
				t.Errorf("approve %d: %v %d %s", i, err, r.status, r.body)
				return
			}
			var v struct{ Token string }
			_ = json.Unmarshal([]byte(r.body), &v)
			tokens[i] = v.Token
			time.Sleep(flaps * time.Second / n) // pacing of the load, not synchronisation
		}
	}()
	up := true
	tick := time.NewTicker(time.Second)
	for range flaps {
		<-tick.C
		if up {
			srv.Shutdown()
		} else {
			srv.Start()
		}
		up = !up
	}
	tick.Stop()
	if !up {
		srv.Start()
	}
	<-approved
	if t.Failed() {
		t.FailNow()
	}
	srv.WaitReceived(t, n, 15*time.Second)
	servicetest.Poll(t, 5*time.Second, "the outbox is empty and nothing is pending", func() bool {
		return rs.Do("XLEN", outbox.Stream) == "0" && pendingCount(t, rs) == 0
	})
	got := srv.Received()
	byKey := emailsByKey(t, got)
	for i := range n {
		if c := byKey[fmt.Sprintf("flap%d@example.com %s", i, tokens[i])]; c != 1 {
			t.Errorf("flap%d received %d emails with its key, want 1", i, c)
		}
	}
	if len(got) != n {
		t.Errorf("%d emails received, want %d", len(got), n)
	}
	if d := rs.Do("XLEN", outbox.Dead); d != "0" {
		t.Errorf("dead-letter stream holds %s", d)
	}
	// The flapping was felt: sends failed on an unreachable server.
	m := regexp.MustCompile(`\npesto_emails_failed_total\{reason="unreachable"\} (\d+)\n`).FindStringSubmatch(send(t, "GET", base+"/metrics", "").body)
	if m == nil || m[1] == "0" {
		t.Errorf("no send met the server down: %v", m)
	} else {
		t.Logf("%d emails delivered once each; %s sends met the server down", n, m[1])
	}
}

// Redis restarted (with its data, AOF) while registrations and approvals
// run: during the gap every answer is 500 {"message":"Internal server
// error"} with Retry-After: 1, the service works again within 2 s of Redis
// being back, and nothing is half-written: every signup answered 201 is
// listed once, every approve answered 200 has its one record and one queued
// email, and repeating the approves that failed completes them.
func TestRedisRestartDuringTraffic(t *testing.T) {
	rs := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	const approvals = 400
	for i := range approvals {
		rs.Do("RPUSH", wire.WaitingList, fmt.Sprintf(`{"name":"A","email":"ap%d@example.com","building":"","calls":1}`, i))
	}

	type outcome struct {
		what, email string
		status      int
		body        string
		retryAfter  string
		at          time.Time
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	record := func(o outcome) {
		mu.Lock()
		outcomes = append(outcomes, o)
		mu.Unlock()
	}
	var next atomic.Int32
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				i := int(next.Add(1)) - 1
				if i >= approvals {
					return
				}
				reg := fmt.Sprintf("rg%d@example.com", i)
				r, err := try("POST", base+"/api/register", `{"name":"R","email":"`+reg+`","calls":1}`)
				if err != nil {
					t.Errorf("register: %v", err)
					return
				}
				record(outcome{"register", reg, r.status, r.body, r.header.Get("Retry-After"), time.Now()})
				ap := fmt.Sprintf("ap%d@example.com", i)
				r, err = try("PUT", base+"/api/approve", `{"email":"`+ap+`","limit":3}`, auth...)
				if err != nil {
					t.Errorf("approve: %v", err)
					return
				}
				record(outcome{"approve", ap, r.status, r.body, r.header.Get("Retry-After"), time.Now()})
			}
		})
	}
	count := func(status int) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if o.status == status {
				n++
			}
		}
		return n
	}
	servicetest.Poll(t, 10*time.Second, "traffic flows", func() bool { return count(201) >= 10 })
	rs.Stop()
	down := time.Now()
	servicetest.Poll(t, 5*time.Second, "requests fail while Redis is down for a second", func() bool {
		return count(500) >= 8 && time.Since(down) > time.Second
	})
	rs.Restart()
	back := time.Now()
	var healed time.Time
	servicetest.Poll(t, 5*time.Second, "requests succeed again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range outcomes {
			if (o.status == 201 || o.status == 200) && o.at.After(back) {
				healed = o.at
				return true
			}
		}
		return false
	})
	stop.Store(true)
	wg.Wait()
	if d := healed.Sub(back); d > 2*time.Second {
		t.Errorf("first success %v after Redis was back, want within 2s", d)
	}
	t.Logf("%d requests; %d answered 500; healed %v after Redis was back", len(outcomes), count(500), healed.Sub(back))

	// Every answer is one of the contract's.
	wantBody := map[int]string{201: created, 202: accepted, 500: `{"message":"Internal server error"}`}
	for _, o := range outcomes {
		switch {
		case o.status == 500:
			if o.body != wantBody[500] || o.retryAfter != "1" {
				t.Errorf("%s %s: 500 %s, Retry-After %q", o.what, o.email, o.body, o.retryAfter)
			}
		case o.what == "register" && (o.status == 201 || o.status == 202):
			if o.body != wantBody[o.status] {
				t.Errorf("register %s: %d %s", o.email, o.status, o.body)
			}
		case o.what == "approve" && o.status == 200:
		case o.what == "approve" && o.status == 400 && o.body == `{"message":"Email does not exists"}`:
			// only after a 500 of the same approve is that possible: a
			// completed first attempt; checked below by the state.
		default:
			t.Errorf("%s %s: %d %s", o.what, o.email, o.status, o.body)
		}
	}
	if strings.Contains(logs.String(), "panic") {
		t.Error("a panic is logged")
	}
	if t.Failed() {
		t.FailNow()
	}

	// Repeat what failed; then the state is whole.
	ok := map[string]bool{}
	for _, o := range outcomes {
		if o.status != 500 {
			ok[o.what+" "+o.email] = true
		}
	}
	for _, o := range outcomes {
		if o.status != 500 || ok[o.what+" "+o.email] {
			continue
		}
		switch o.what {
		case "register":
			if r := send(t, "POST", base+"/api/register", `{"name":"R","email":"`+o.email+`","calls":1}`); r.status != 201 && r.status != 202 {
				t.Errorf("register %s again: %d %s", o.email, r.status, r.body)
			}
		case "approve":
			r := send(t, "PUT", base+"/api/approve", `{"email":"`+o.email+`","limit":3}`, auth...)
			if r.status != 200 {
				r.want(t, 400, `{"message":"Email does not exists"}`)
			}
		}
		ok[o.what+" "+o.email] = true
	}
	st := readState(t, rs)
	listed := map[string]int{}
	for _, e := range st.listed {
		listed[e]++
	}
	if len(st.markers) != 0 {
		t.Errorf("approving keys left: %v", st.markers)
	}
	for k := range ok {
		what, email, _ := strings.Cut(k, " ")
		switch what {
		case "register":
			if listed[email] != 1 {
				t.Errorf("%s listed %d times, want 1", email, listed[email])
			}
		case "approve":
			recs, queued := st.records[email], st.outbox[email]
			if listed[email] != 0 || len(recs) != 1 || len(queued) != 1 || queued[0] != recs[0] {
				t.Errorf("%s: listed %d, records %v, queued %v", email, listed[email], recs, queued)
			}
		}
	}
	// Nothing else: no record, queued email or signup of anyone not asked for.
	if len(st.records) != st.outboxN || st.outboxN != len(st.outbox) {
		t.Errorf("%d records, %d queued emails to %d people", len(st.records), st.outboxN, len(st.outbox))
	}
	for e := range st.records {
		if !ok["approve "+e] {
			t.Errorf("a record for %s, whose approve was never made", e)
		}
	}
}

// SMTP_URL unset or empty: the service runs, emails wait, and the warning
// is logged once, not once per component.
func TestSMTPURLEmptyWarnsOnce(t *testing.T) {
	rs := redistest.Start(t)
	for _, env := range []map[string]string{{"REDIS_URL": rs.URL}, {"REDIS_URL": rs.URL, "SMTP_URL": ""}} {
		base, logs := startRegistration(t, env)
		servicetest.Poll(t, 5*time.Second, "the warning is logged", func() bool { return strings.Contains(logs.String(), "SMTP_URL is empty") })
		if r := send(t, "POST", base+"/api/trial", ""); r.status != 200 {
			t.Fatalf("trial: %d %s", r.status, r.body)
		}
		if n := strings.Count(logs.String(), "SMTP_URL is empty"); n != 1 {
			t.Fatalf("SMTP_URL=%q: the warning is logged %d times:\n%s", env["SMTP_URL"], n, logs)
		}
	}
}

package deploy

import (
	"context"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"

	"pesto/shared/doccheck"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// The new services beside the old ones (oldauth_test.go,
// oldregistration_test.go) on one Redis, as during a migration: what
// differs in the answers, what the counting of both does to a quota, trial
// keys, quota warnings, and the old registration's admin. docs/migration.md
// and the README ("Beside the old auth") cite these tests.

// hookAnswer is an answer of the hook: status, body and Content-Type (""
// when there is none).
type hookAnswer struct {
	status            int
	body, contentType string
}

const jsonType = "application/json"

func (a hookAnswer) String() string {
	return strconv.Itoa(a.status) + " " + strconv.Quote(a.body) + " Content-Type " + strconv.Quote(a.contentType)
}

// hook calls the hook at addr with path, with X-Pesto-Token when token is
// not nil.
func hook(t *testing.T, addr, path string, token *string) hookAnswer {
	t.Helper()
	got := do(t, http.MethodGet, "http://"+addr+path, token)
	return hookAnswer{got.status, got.body, got.header.Get("Content-Type")}
}

// Every answer of the old auth beside ours, for the same request and the
// same Redis: where they differ, ours is the one decided in the README
// ("Beside the old auth").
func TestAnswersBesideTheOldAuth(t *testing.T) {
	rs := redistest.StartStandalone(t)
	ours, _ := startAuth(t, buildAuth(t), rs.URL)
	_, old := startOldAuth(t, rs.Addr)
	counter := wire.CounterKey(time.Now(), "")
	for key, value := range map[string]string{
		"key-ok":                          `{"UserEmail":"ok@example.com","MonthlyLimit":1000,"Revoked":false}`,
		"key-revoked":                     `{"UserEmail":"revoked@example.com","MonthlyLimit":1000,"Revoked":true}`,
		"key-at-limit":                    `{"UserEmail":"at-limit@example.com","MonthlyLimit":2,"Revoked":false}`,
		counter + "at-limit@example.com":  "2",
		"key-over":                        `{"UserEmail":"over@example.com","MonthlyLimit":2,"Revoked":false}`,
		counter + "over@example.com":      "3",
		"key-no-revoked":                  `{"UserEmail":"no-revoked@example.com","MonthlyLimit":1000}`,
		"key-aliases":                     `{"email":"aliases@example.com","limit":1000,"token":"key-aliases"}`,
		"key-twice":                       `{"UserEmail":"twice@example.com","MonthlyLimit":1000,"Revoked":true,"Revoked":false}`,
		"key-array":                       `["array@example.com",1000,false]`,
		"key-spellings":                   `{"UserEmail":"spellings@example.com","MonthlyLimit":1000,"Revoked":false,"revoked":true}`,
		wire.HashedKey("hashed-key"):      `{"UserEmail":"hashed@example.com","MonthlyLimit":1000,"Revoked":false}`,
		counter + "a-counter@example.com": "5",
		"with space":                      `{"UserEmail":"space@example.com","MonthlyLimit":1000,"Revoked":false}`,
		strings.Repeat("k", 300):          `{"UserEmail":"long@example.com","MonthlyLimit":1000,"Revoked":false}`,
	} {
		rs.Do("SET", key, value)
	}
	rs.Do("RPUSH", "waiting-list", `{"name":"Jane","email":"jane@example.com","building":"","calls":1}`)

	var (
		ok             = hookAnswer{200, "", ""}
		oldOK          = hookAnswer{200, "", "text/plain"}
		mustBeSupplied = hookAnswer{401, oldMustBeSupplied, jsonType}
		notRegistered  = hookAnswer{401, oldNotRegistered, jsonType}
		revoked        = hookAnswer{401, oldRevoked, jsonType}
		overQuota      = hookAnswer{429, oldOverQuota, jsonType}
		internal       = hookAnswer{500, oldInternal, jsonType}
	)
	for _, c := range []struct {
		name, path string
		token      *string // nil: no header
		old, ours  hookAnswer
	}{
		{"valid key (the empty 200's Content-Type differs)", "/", ptr("key-ok"), oldOK, ok},
		{"no header", "/", nil, mustBeSupplied, mustBeSupplied},
		{"empty header", "/", ptr(""), notRegistered, mustBeSupplied},
		{"a byte outside visible ASCII", "/", ptr("k\u00e9y"), mustBeSupplied, notRegistered},
		{"unknown key", "/", ptr("no-such-key"), notRegistered, notRegistered},
		{"revoked key", "/", ptr("key-revoked"), revoked, revoked},
		{"counter at the limit: the old auth's limit+1st call", "/", ptr("key-at-limit"), oldOK, overQuota},
		{"counter past the limit", "/", ptr("key-over"), overQuota, overQuota},
		{"record without Revoked", "/", ptr("key-no-revoked"), internal, ok},
		{"record with a field twice", "/", ptr("key-twice"), internal, internal},
		{"record with a field under two spellings", "/", ptr("key-spellings"), oldOK, internal},
		{"record with the lower-case aliases", "/", ptr("key-aliases"), internal, ok},
		{"record as a JSON array", "/", ptr("key-array"), oldOK, internal},
		{"our key name: the waiting list", "/", ptr("waiting-list"), internal, notRegistered},
		{"our key name: a counter", "/", ptr(counter + "a-counter@example.com"), internal, notRegistered},
		{"our key name: a hashed key's record", "/", ptr(wire.HashedKey("hashed-key")), oldOK, notRegistered},
		{"a key with a space in it", "/", ptr("with space"), oldOK, notRegistered},
		{"a key over 256 bytes", "/", ptr(strings.Repeat("k", 300)), oldOK, notRegistered},
		{"unknown path", "/api/execute", ptr("key-ok"), hookAnswer{404, "", ""}, hookAnswer{404, `{"message":"Not found"}`, jsonType}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Ours first: it writes nothing when it refuses, the old auth may.
			if got := hook(t, ours, c.path, c.token); got != c.ours {
				t.Errorf("ours: got %v, want %v", got, c.ours)
			}
			if got := hook(t, old, c.path, c.token); got != c.old {
				t.Errorf("old: got %v, want %v", got, c.old)
			}
		})
	}
}

// What the counting of the old auth (read, compare, write back old+1)
// does to a quota, alone and beside ours.
func TestCountingBesideTheOldAuth(t *testing.T) {
	rs := redistest.StartStandalone(t)
	// The quota alone is compared: the old auth has no per-key rate
	// (README, Per-key rate; its own tests are auth's).
	ours, _ := startAuth(t, buildAuth(t), rs.URL, "LOG_LEVEL=error", "KEY_RATE=off")
	oldAuth, old := startOldAuth(t, rs.Addr)
	counter := wire.CounterKey(time.Now(), "")
	record := func(email string, limit int) string {
		return `{"UserEmail":"` + email + `","MonthlyLimit":` + strconv.Itoa(limit) + `,"Revoked":false}`
	}

	t.Run("the old auth allows limit+1 calls, one at a time", func(t *testing.T) {
		rs.Do("SET", "key-seq-old", record("seq-old@example.com", 3))
		rs.Do("SET", "key-seq-new", record("seq-new@example.com", 3))
		got := map[string][]int{}
		for range 5 {
			got["old"] = append(got["old"], hook(t, old, "/", ptr("key-seq-old")).status)
			got["ours"] = append(got["ours"], hook(t, ours, "/", ptr("key-seq-new")).status)
		}
		if want := []int{200, 200, 200, 200, 429}; !slices.Equal(got["old"], want) {
			t.Errorf("old: %v, want %v", got["old"], want)
		}
		if want := []int{200, 200, 200, 429, 429}; !slices.Equal(got["ours"], want) {
			t.Errorf("ours: %v, want %v", got["ours"], want)
		}
		if c := rs.Do("GET", counter+"seq-old@example.com"); c != "4" {
			t.Errorf("old counter %q, want 4", c)
		}
	})

	t.Run("the old auth pushes the counter's TTL forward on every call", func(t *testing.T) {
		rs.Do("SET", "key-ttl", record("ttl@example.com", 100))
		hook(t, old, "/", ptr("key-ttl"))
		rs.Do("EXPIRE", counter+"ttl@example.com", "100")
		hook(t, old, "/", ptr("key-ttl"))
		if ttl, _ := strconv.Atoi(rs.Do("TTL", counter+"ttl@example.com")); ttl < 3456000-60 {
			t.Errorf("TTL %d after a call through the old auth, want 40 days again", ttl)
		}
	})

	t.Run("a call through the old auth undoes the counts ours made meanwhile", func(t *testing.T) {
		rs.Do("SET", "key-race", record("race@example.com", 100))
		var inWindow []int
		oldAuth.between = func() { // after its read of 0, before its write
			for range 5 {
				status, _ := hookStatus(client, ours, "key-race")
				inWindow = append(inWindow, status)
			}
		}
		got := hook(t, old, "/", ptr("key-race"))
		oldAuth.between = nil
		if got.status != 200 || !slices.Equal(inWindow, []int{200, 200, 200, 200, 200}) {
			t.Fatalf("old %v, ours meanwhile %v: want every call allowed", got, inWindow)
		}
		if c := rs.Do("GET", counter+"race@example.com"); c != "1" {
			t.Fatalf("counter %q after 6 allowed calls, want 1: the old auth wrote back what it read plus one", c)
		}
	})

	t.Run("both serving one key at once", func(t *testing.T) {
		const limit, calls = 300, 1200
		for _, workers := range []int{4, 32} {
			email := "both-" + strconv.Itoa(workers) + "@example.com"
			rs.Do("SET", "key-"+email, record(email, limit))
			allowed := spread(t, calls, workers, "key-"+email, ours, old)
			total := allowed[ours] + allowed[old]
			t.Logf("limit %d, %d calls from %d clients, each to either auth in turn: ours allowed %d, the old auth %d, %d in all; the counter ended at %s",
				limit, calls, workers, allowed[ours], allowed[old], total, rs.Do("GET", counter+email))
			if total <= limit {
				t.Errorf("%d clients: %d allowed in all, want more than the limit %d", workers, total, limit)
			}
		}
	})

	t.Run("switched at once: exact from the switch on", func(t *testing.T) {
		const limit, before, after, workers = 300, 100, 600, 16
		rs.Do("SET", "key-switch", record("switch@example.com", limit))
		byOld := spread(t, before, workers, "key-switch", old)[old]
		atSwitch, _ := strconv.Atoi(rs.Do("GET", counter+"switch@example.com"))
		byOurs := spread(t, after, workers, "key-switch", ours)[ours]
		t.Logf("the old auth alone, %d clients: %d calls allowed, counted as %d; then ours alone: %d allowed, the counter at %s",
			workers, byOld, atSwitch, byOurs, rs.Do("GET", counter+"switch@example.com"))
		if byOurs != limit-atSwitch || rs.Do("GET", counter+"switch@example.com") != strconv.Itoa(limit) {
			t.Errorf("ours allowed %d after the switch at %d, counter %s: want exactly %d, counter %d",
				byOurs, atSwitch, rs.Do("GET", counter+"switch@example.com"), limit-atSwitch, limit)
		}
	})
}

// spread sends calls hook calls with token from workers clients, each call
// to the next of addrs in turn, and returns the 200s of each address.
func spread(t *testing.T, calls, workers int, token string, addrs ...string) map[string]int {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var mu sync.Mutex
	allowed := map[string]int{}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				addr := addrs[i%len(addrs)]
				status, err := hookStatus(c, addr, token)
				mu.Lock()
				switch {
				case status == 200:
					allowed[addr]++
				case status != 429:
					t.Errorf("%s: %d %v", addr, status, err)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range calls {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return allowed
}

// hookStatus calls the hook at addr with token and returns the status: for
// goroutines other than the test's, which may not end it.
func hookStatus(c *http.Client, addr, token string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Pesto-Token", token)
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, err = io.Copy(io.Discard, res.Body)
	return res.StatusCode, err
}

// Trial keys: the old auth counts no email that starts with "trial" (any
// case) and ends in exactly "@pesto.teknologiumum.com"; ours counts none that
// UNMETERED_EMAILS matches, ignoring case. Where the two sets differ, the
// same key is counted by one and not by the other.
func TestTrialKeysBesideTheOldAuth(t *testing.T) {
	rs := redistest.StartStandalone(t)
	bin := buildAuth(t)
	ours, _ := startAuth(t, bin, rs.URL) // UNMETERED_EMAILS: its default, trial*@pesto.teknologiumum.com
	oursOtherDomain, _ := startAuth(t, bin, rs.URL, "UNMETERED_EMAILS=trial*@trials.example.org")
	_, old := startOldAuth(t, rs.Addr)
	counter := wire.CounterKey(time.Now(), "")
	for _, c := range []struct {
		email            string
		ours             string // the auth that stands beside the old one
		oldCounts, count bool   // whether the old auth and ours count the key's calls
	}{
		{"trial-abc@pesto.teknologiumum.com", ours, false, false},
		{"Trial-ABC@pesto.teknologiumum.com", ours, false, false},
		{"trial-abc@PESTO.teknologiumum.com", ours, true, false},
		{"trial-abc@trials.example.org", oursOtherDomain, true, false},
		{"jane@example.com", ours, true, true},
	} {
		t.Run(c.email, func(t *testing.T) {
			key := "key-" + c.email
			rs.Do("SET", key, `{"UserEmail":"`+c.email+`","MonthlyLimit":10,"Revoked":false}`)
			for _, a := range []struct {
				name, addr string
				counts     bool
			}{{"ours", c.ours, c.count}, {"old", old, c.oldCounts}} {
				before, _ := strconv.Atoi(rs.Do("GET", counter+c.email))
				for range 3 {
					if got := hook(t, a.addr, "/", &key); got.status != 200 {
						t.Fatalf("%s: %v", a.name, got)
					}
				}
				after, _ := strconv.Atoi(rs.Do("GET", counter+c.email))
				if counted := after > before; counted != a.counts {
					t.Errorf("%s: counter %d → %d after 3 calls, want counted %v", a.name, before, after, a.counts)
				}
			}
		})
	}
}

// A quota warning goes out for the call that crosses its threshold: one
// crossed through the old auth is never warned.
func TestQuotaWarningsBesideTheOldAuth(t *testing.T) {
	rs := redistest.StartStandalone(t)
	ours, _ := startAuth(t, buildAuth(t), rs.URL) // QUOTA_WARNINGS: its default, 80,100
	_, old := startOldAuth(t, rs.Addr)
	key := "key-warned"
	rs.Do("SET", key, `{"UserEmail":"warned@example.com","MonthlyLimit":10,"Revoked":false}`)
	for i := 1; i <= 10; i++ {
		addr := old // the 8th call, 80 % of 10, through the old auth
		if i > 8 {
			addr = ours
		}
		if got := hook(t, addr, "/", &key); got.status != 200 {
			t.Fatalf("call %d: %v", i, got)
		}
	}
	servicetest.Poll(t, 5*time.Second, "the 100 % warning queued", func() bool {
		return rs.Do("XLEN", wire.OutboxStream) != "0"
	})
	entries := rs.Do("XRANGE", wire.OutboxStream, "-", "+")
	if rs.Do("XLEN", wire.OutboxStream) != "1" || !strings.Contains(entries, "percent\n100\n") || strings.Contains(entries, "percent\n80\n") {
		t.Fatalf("outbox:\n%s\nwant the 100 %% warning alone", entries)
	}
}

// The old registration beside ours and both auths, on one Redis: signups
// of either read by the other, the old admin's approve open to anyone, its
// revoke that fails, trial keys of either used through the other auth.
func TestBesideTheOldRegistration(t *testing.T) {
	rs := redistest.StartStandalone(t)
	regBin := buildCommand(t, "registration")
	reg := "http://" + startRegistration(t, regBin, rs.URL)
	admin := map[string]string{"Authorization": "Bearer " + adminJWT(t, regBin)}
	ours, _ := startAuth(t, buildAuth(t), rs.URL)
	_, oldAuth := startOldAuth(t, rs.Addr)
	oldReg, oldRegAddr := startOldRegistration(t, rs.Addr, "a-mailersend-key")
	old := "http://" + oldRegAddr

	// Signups: the old registration stores a missing building as null, ours
	// as ""; each reads the other's.
	request(t, "POST", old+"/api/register", `{"name":"Old","email":"old@example.com","calls":5}`, nil).want(t, 201, `{"message":"Created"}`)
	request(t, "POST", reg+"/api/register", `{"name":"New","email":"new@example.com","calls":5}`, nil).want(t, 201, `{"message":"Created"}`)
	oldElem := `{"name":"Old","email":"old@example.com","building":null,"calls":5}`
	newElem := `{"name":"New","email":"new@example.com","building":"","calls":5}`
	if got := rs.DoList("LRANGE", "waiting-list", "0", "-1"); !slices.Equal(got, []string{oldElem, newElem}) {
		t.Fatalf("waiting list %q", got)
	}
	// The same person: ours compares emails ignoring case, the old one
	// byte for byte.
	request(t, "POST", reg+"/api/register", `{"name":"Old","email":"OLD@example.com","calls":5}`, nil).want(t, 202, `{"message":"Accepted"}`)
	request(t, "POST", old+"/api/register", `{"name":"Old again","email":"OLD@example.com","calls":5}`, nil).want(t, 201, `{"message":"Created"}`)
	againElem := `{"name":"Old again","email":"OLD@example.com","building":null,"calls":5}`
	request(t, "GET", old+"/api/pending", "", nil).want(t, 200, "["+oldElem+","+newElem+","+againElem+"]")
	if got := request(t, "GET", reg+"/api/pending", "", admin); got.status != 200 ||
		!strings.Contains(got.body, `"old@example.com"`) || !strings.Contains(got.body, `"OLD@example.com"`) {
		t.Fatalf("ours' pending: %d %s", got.status, got.body)
	}

	// The old admin asks for no credential at all: anyone who reaches it
	// approves a listed signup (their own) with any limit and key.
	const selfApproved = "self-approved-key-0000000000000000000000000000000000000000000000"
	request(t, "PUT", old+"/api/approve", `{"email":"old@example.com","limit":1000000000,"token":"`+selfApproved+`"}`, nil).
		want(t, 200, `{"message":"OK"}`)
	if got := rs.Do("GET", selfApproved); got != `{"UserEmail":"old@example.com","MonthlyLimit":1000000000,"Revoked":false}` {
		t.Fatalf("record %q", got)
	}
	if got := hook(t, ours, "/", ptr(selfApproved)); got.status != 200 {
		t.Fatalf("ours, self-approved key: %v", got)
	}
	if got := oldReg.sent(); !slices.Equal(got, []oldEmail{{"old@example.com", selfApproved}}) {
		t.Errorf("old registration's emails %v", got)
	}
	request(t, "PUT", reg+"/api/approve", `{"email":"new@example.com","limit":5}`, nil).want(t, 401, `{"message":"Unauthorized"}`)
	// Any key name that holds no record is free to it, and SET overwrites:
	// a listed signup "approved" under someone's counter makes every call
	// of theirs a 500 for the rest of the month.
	rs.Do("SET", "victim-key", `{"UserEmail":"victim@example.com","MonthlyLimit":100,"Revoked":false}`)
	request(t, "POST", old+"/api/register", `{"name":"M","email":"mallory@example.com","calls":1}`, nil).want(t, 201, `{"message":"Created"}`)
	victimCounter := wire.CounterKey(time.Now(), "victim@example.com")
	request(t, "PUT", old+"/api/approve", `{"email":"mallory@example.com","limit":1,"token":"`+victimCounter+`"}`, nil).want(t, 200, `{"message":"OK"}`)
	for _, addr := range []string{ours, oldAuth} {
		if got := hook(t, addr, "/", ptr("victim-key")); got.status != 500 {
			t.Errorf("%s, a key whose counter the old admin overwrote: %v, want 500", addr, got)
		}
	}
	// It rebuilt the list without that exact email; without a key it
	// approves nothing.
	if got := rs.DoList("LRANGE", "waiting-list", "0", "-1"); !slices.Equal(got, []string{newElem, againElem}) {
		t.Fatalf("waiting list after the old approve %q", got)
	}
	request(t, "PUT", old+"/api/approve", `{"email":"new@example.com","limit":5}`, nil).
		want(t, 400, `{"message":"User seemed to be approved already"}`)

	// Ours approves what the old one listed; the old auth lets its key in.
	approved := request(t, "PUT", reg+"/api/approve", `{"email":"OLD@example.com","limit":5}`, admin)
	newKey := strings.TrimSuffix(strings.TrimPrefix(approved.body, `{"message":"OK","token":"`), `"}`)
	if approved.status != 200 || len(newKey) != 64 {
		t.Fatalf("ours' approve: %d %s", approved.status, approved.body)
	}
	if got := hook(t, oldAuth, "/", &newKey); got.status != 200 {
		t.Fatalf("old auth, key approved by ours: %v", got)
	}

	// The old revoke answers 500 and changes nothing: the record it reads
	// names no key to write back to.
	request(t, "PUT", old+"/api/revoke", `{"token":"`+selfApproved+`"}`, nil).want(t, 500, oldRegInternal)
	if got := rs.Do("GET", selfApproved); got != `{"UserEmail":"old@example.com","MonthlyLimit":1000000000,"Revoked":false}` {
		t.Fatalf("record after the old revoke %q", got)
	}
	for _, addr := range []string{ours, oldAuth} {
		if got := hook(t, addr, "/", ptr(selfApproved)); got.status != 200 {
			t.Fatalf("%s after the old revoke: %v", addr, got)
		}
	}
	// Ours revokes it, and both auths refuse it.
	request(t, "PUT", reg+"/api/revoke", `{"token":"`+selfApproved+`"}`, admin).want(t, 200, `{"message":"OK"}`)
	if got := hook(t, oldAuth, "/", ptr(selfApproved)); got.body != oldRevoked {
		t.Errorf("old auth after our revoke: %v", got)
	}
	servicetest.Poll(t, time.Second, "ours refusing the revoked key", func() bool {
		return hook(t, ours, "/", ptr(selfApproved)).body == oldRevoked
	})
	// The old revoke works only for a record that names its own key in a
	// token field (an old admin payload stored as it came): it writes it
	// back revoked, without its TTL.
	rs.Do("SET", "alias-key", `{"email":"alias@example.com","limit":5,"token":"alias-key"}`, "EX", "3600")
	request(t, "PUT", old+"/api/revoke", `{"token":"alias-key"}`, nil).want(t, 200, `{"message":"OK"}`)
	if got, ttl := rs.Do("GET", "alias-key"), rs.Do("TTL", "alias-key"); got != `{"UserEmail":"alias@example.com","MonthlyLimit":5,"Revoked":true}` || ttl != "-1" {
		t.Errorf("alias record after the old revoke %q, TTL %s", got, ttl)
	}

	// Trial keys of either registration work through the other auth, and
	// neither auth counts them (UNMETERED_EMAILS at its default).
	for _, c := range []struct{ registration, auth string }{{old, ours}, {reg, oldAuth}} {
		got := request(t, "POST", c.registration+"/api/trial", "", nil)
		trial := strings.TrimSuffix(strings.TrimPrefix(got.body, `{"token":"`), `"}`)
		if got.status != 200 || !strings.HasPrefix(trial, "TRIAL-") || len(trial) != 64 {
			t.Fatalf("trial from %s: %d %s", c.registration, got.status, got.body)
		}
		for range 2 {
			if got := hook(t, c.auth, "/", &trial); got.status != 200 {
				t.Fatalf("trial key through %s: %v", c.auth, got)
			}
		}
	}
	if counters := rs.Keys("counter/*trial-*"); len(counters) != 0 {
		t.Errorf("trial keys counted: %v", counters)
	}
}

// adminJWT makes an admin token with registration's admin-token subcommand,
// signed with the adminSecret startRegistration configures.
func adminJWT(t *testing.T, bin string) string {
	t.Helper()
	cmd := exec.Command(bin, "admin-token", "--sub", "side-by-side")
	cmd.Env = []string{"ADMIN_JWT_SECRET=" + adminSecret}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("admin-token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// The old auth behind the recipes and the gateway (during a rollback): its
// denials pass Traefik and Caddy as they are; the nginx recipe rebuilds a
// denial from X-Pesto-Error, which the old auth never sends, so there the
// status is kept and the message is "Internal server error". Its 200 lets
// the API's answer through, as ours does.
func TestOldAuthBehindTheProxies(t *testing.T) {
	rs := redistest.StartStandalone(t)
	_, old := startOldAuth(t, rs.Addr)
	rs.Do("SET", validKey, seeded[validKey])
	rs.Do("SET", revokedKey, seeded[revokedKey])
	api := stubAPI(t, &gate{})
	registration := stubUpstream(t, "registration ok")
	for _, f := range []struct {
		name, addr string
		denial     func(message string) string
	}{
		{"nginx", startNginx(t, lookTool(t, "nginx"), old, api, registration), func(string) string { return "Internal server error" }},
		{"caddy", startCaddy(t, lookTool(t, "caddy"), old, api, registration), func(m string) string { return m }},
		{"traefik", startTraefik(t, lookTraefik(t), old, api, registration), func(m string) string { return m }},
	} {
		t.Run(f.name, func(t *testing.T) {
			for _, c := range []struct {
				token   *string
				status  int
				message string
			}{
				{nil, 401, "Token must be supplied"},
				{ptr("no-such-key"), 401, "Token not registered"},
				{ptr(revokedKey), 401, "Token has been revoked"},
			} {
				got := do(t, "GET", "http://"+f.addr+"/api/execute", c.token)
				if want := `{"message":"` + f.denial(c.message) + `"}`; got.status != c.status || got.body != want {
					t.Errorf("%s: got %d %q, want %d %q", c.message, got.status, got.body, c.status, want)
				}
			}
			// On a 200 the client gets the API's answer, headers and all:
			// never the Content-Type of auth's own 200 (the old auth's
			// text/plain, ours none).
			got := do(t, "GET", "http://"+f.addr+"/api/execute", ptr(validKey))
			if ct := got.header.Get("Content-Type"); got.status != 200 || got.body != "upstream ok" || ct != "text/plain; charset=utf-8" {
				t.Errorf("valid key: %d %q, Content-Type %q (the API's is text/plain; charset=utf-8)", got.status, got.body, ct)
			}
		})
	}
}

// migrationGuide returns the text of docs/migration.md.
func migrationGuide(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(doccheck.Root(t), "docs", "migration.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// between returns the text of s after the first start, up to the first end
// after it.
func between(t *testing.T, s, start, end string) string {
	t.Helper()
	_, after, ok := strings.Cut(s, start)
	if !ok {
		t.Fatalf("no %q", start)
	}
	text, _, ok := strings.Cut(after, end)
	if !ok {
		t.Fatalf("no %q after %q", end, start)
	}
	return text
}

// The guide's script lists the keys our auth will not look up and the
// records the old auth answered 500 for that ours reads, and nothing else.
func TestMigrationKeyCheck(t *testing.T) {
	script := between(t, migrationGuide(t), "redis-cli EVAL '", "' 0\n")
	rs := redistest.StartStandalone(t)
	canonical := `{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":false}`
	want := []string{"k\u00e9y", "no-revoked", "aliases", "with space", "tab\tkey", strings.Repeat("k", 257)}
	for _, k := range []string{"k\u00e9y", "with space", "tab\tkey", strings.Repeat("k", 257)} {
		rs.Do("SET", k, canonical)
	}
	rs.Do("SET", "no-revoked", `{"UserEmail":"a@example.com","MonthlyLimit":5}`)
	rs.Do("SET", "aliases", ` {"email":"a@example.com","limit":5,"token":"aliases"}`)
	// Not listed: read alike by both auths, or not a key.
	rs.Do("SET", "fine", canonical)
	rs.Do("SET", strings.Repeat("k", 256), canonical)
	rs.Do("SET", "revoked", `{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":true}`)
	rs.Do("SET", "twice", `{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":true,"Revoked":false}`)
	rs.Do("SET", "not-json", "hello")
	rs.Do("SET", wire.HashedKey("hashed"), `{"UserEmail":"a@example.com","MonthlyLimit":5}`)
	rs.Do("SET", wire.CounterKey(time.Now(), "a@example.com"), "5")
	rs.Do("RPUSH", "waiting-list", `{"name":"A","email":"a@example.com","building":null,"calls":1}`)
	rs.Do("HSET", "a hash", "f", "v")
	for i := range 3000 { // more than one SCAN batch
		rs.Do("SET", "bulk-"+strconv.Itoa(i), canonical)
	}
	c := rs.Client()
	got, err := c.Do(context.Background(), c.B().Eval().Script(script).Numkeys(0).Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("listed %q, want %q", got, want)
	}
}

// The guide's compose.migration.yaml, loaded over compose.yaml as Docker
// Compose loads it: the old registration reachable from Redis's network
// alone, with its Mailersend key; the old auth without PORT; the gateway
// reading dynamic.migration.yaml, which the guide's sed makes from
// dynamic.yaml by changing the hook's address alone.
func TestMigrationCompose(t *testing.T) {
	guide := migrationGuide(t)
	override := filepath.Join(t.TempDir(), "compose.migration.yaml")
	_, block, _ := strings.Cut(between(t, guide, "`compose.migration.yaml`, next to `compose.yaml`", "\n```\n"), "```yaml\n")
	writeFile(t, override, block)
	o, err := cli.NewProjectOptions([]string{composeFile, override}, cli.WithName("pesto"), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := o.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load with the override: %v", err)
	}
	reg, auth := service(t, p, "legacy-registration"), service(t, p, "legacy-auth")
	if len(reg.Ports) != 0 || len(reg.Networks) != 1 {
		t.Errorf("legacy-registration: ports %v, networks %v; want none and backend alone", reg.Ports, slices.Collect(maps.Keys(reg.Networks)))
	}
	if _, ok := reg.Networks["backend"]; !ok {
		t.Errorf("legacy-registration is not on backend (Redis)")
	}
	if _, ok := reg.Environment["MAILERSEND_API_KEY"]; !ok {
		t.Errorf("legacy-registration gets no MAILERSEND_API_KEY")
	}
	if _, ok := auth.Environment["PORT"]; ok {
		t.Errorf("legacy-auth is given PORT, which it ignores")
	}
	for _, n := range []string{"frontend", "backend"} {
		if _, ok := auth.Networks[n]; !ok {
			t.Errorf("legacy-auth is not on %s", n)
		}
	}
	if f := p.Configs["traefik-dynamic"].File; filepath.Base(f) != "dynamic.migration.yaml" {
		t.Errorf("the gateway's routes from %q, want dynamic.migration.yaml", f)
	}
	sed := "sed -i 's|address: http://auth:3000/|address: http://legacy-auth:3000/|' dynamic.migration.yaml"
	b, err := os.ReadFile("../docker/traefik/dynamic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(guide, sed) || strings.Count(string(b), "address: http://auth:3000/") != 1 {
		t.Errorf("the guide's %q must change the hook's address of docker/traefik/dynamic.yaml, and only that", sed)
	}
}

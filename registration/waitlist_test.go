package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"pesto/registration/internal/outbox"
	"pesto/registration/internal/waitlist"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// legacyFixtures are the raw waiting-list elements the old services wrote
// (shared/fixtures/waiting-list.json).
func legacyFixtures(t *testing.T) []string {
	t.Helper()
	var f struct {
		Cases []struct {
			Raw string `json:"raw"`
		} `json:"cases"`
	}
	servicetest.Fixture(t, servicetest.LegacyFixtures+"waiting-list.json", &f)
	var raws []string
	for _, c := range f.Cases {
		raws = append(raws, c.Raw)
	}
	return raws
}

// The index recognises what the old services write straight to the list,
// before registration first ran, while it runs (appends), and after they
// removed an element (their approve), and approve and reject keep it right.
func TestIndexFollowsLegacyWriters(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	signup := func(email string) response {
		return send(t, "POST", base+"/api/register", `{"name":"N","email":"`+email+`","calls":1}`, "Content-Type", "application/json")
	}
	list := func() string { return strings.Join(rs.DoList("LRANGE", "waiting-list", "0", "-1"), "\n") }

	fixtures := legacyFixtures(t) // jane, joe, ann, r @example.com
	for _, raw := range fixtures {
		rs.Do("RPUSH", "waiting-list", raw)
	}
	before := list()
	signup("JANE@example.com ").want(t, 202, `{"message":"Accepted"}`)
	signup("r@Example.com").want(t, 202, `{"message":"Accepted"}`)
	if got := list(); got != before {
		t.Fatalf("a duplicate changed the list:\n%s", got)
	}

	// An old service appends while registration runs.
	rs.Do("RPUSH", "waiting-list", `{"name":"Late","email":" Late@Example.com","building":null,"calls":2}`)
	signup("late@example.com").want(t, 202, `{"message":"Accepted"}`)

	// An old service's approve removes an element (LREM): the index starts
	// again and forgets the person, who may sign up anew.
	rs.Do("LREM", "waiting-list", "1", fixtures[1]) // joe
	signup("joe@example.com").want(t, 201, `{"message":"Created"}`)
	signup("jane@example.com").want(t, 202, `{"message":"Accepted"}`)
	if got, want := rs.Do("LINDEX", "waiting-list", "-1"), `{"name":"N","email":"joe@example.com","building":"","calls":1}`; got != want {
		t.Fatalf("tail %s, want %s", got, want)
	}

	// The old services wrote a person twice: reject removes one signup at a
	// time, and the other is still recognised.
	rs.Do("RPUSH", "waiting-list", `{"name":"Twice","email":"twice@example.com","building":"","calls":1}`)
	rs.Do("RPUSH", "waiting-list", `{"name":"Twice again","email":"TWICE@example.com","building":"","calls":1}`)
	reject := func(email string) response {
		return send(t, "PUT", base+"/api/reject", `{"email":"`+email+`"}`, append([]string{"Content-Type", "application/json"}, auth...)...)
	}
	reject("twice@example.com").want(t, 200, `{"message":"OK"}`)
	signup("twice@example.com").want(t, 202, `{"message":"Accepted"}`)
	if got := rs.Do("LINDEX", "waiting-list", "-1"); got != `{"name":"Twice again","email":"TWICE@example.com","building":"","calls":1}` {
		t.Fatalf("reject removed the wrong signup; tail %s", got)
	}
	reject("twice@example.com").want(t, 200, `{"message":"OK"}`)
	reject("twice@example.com").want(t, 400, `{"message":"Email does not exists"}`)
	signup("twice@example.com").want(t, 201, `{"message":"Created"}`)

	// Approve takes the person off the index too.
	if r := send(t, "PUT", base+"/api/approve", `{"email":"ann@example.com","limit":10}`, append([]string{"Content-Type", "application/json"}, auth...)...); r.status != 200 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	signup("ann@example.com").want(t, 201, `{"message":"Created"}`)

	// The index holds exactly the listed people, each with their oldest signup.
	persons := map[string]bool{}
	for _, raw := range rs.DoList("LRANGE", "waiting-list", "0", "-1") {
		var s struct{ Email string }
		_ = json.Unmarshal([]byte(raw), &s)
		p := waitlist.PersonKey(s.Email)
		if got := rs.Do("HGET", waitlist.PeopleKey, p); got != raw {
			t.Errorf("index[%q] = %q, want %q", p, got, raw)
		}
		persons[p] = true
	}
	if got, want := rs.Do("HLEN", waitlist.PeopleKey), strconv.Itoa(len(persons)); got != want || rs.Do("EXISTS", waitlist.PeopleMoreKey) != "0" {
		t.Errorf("index holds %s people, want %s; more: %s", got, want, rs.Do("EXISTS", waitlist.PeopleMoreKey))
	}
}

// Every key a script of the waiting list touches is in the list's cluster
// slot, and the scripts run on a Redis Cluster.
func TestIndexKeysShareTheListSlot(t *testing.T) {
	rs := redistest.StartCluster(t)
	want := rs.Do("CLUSTER", "KEYSLOT", "waiting-list")
	for _, k := range []string{waitlist.PeopleKey, waitlist.PeopleMoreKey, waitlist.PeopleSeenKey, waitlist.ApprovingKey("jane@example.com"), outbox.Stream, outbox.Dead, outbox.Attempts} {
		if got := rs.Do("CLUSTER", "KEYSLOT", k); got != want {
			t.Errorf("%s is in slot %s, the list in %s", k, got, want)
		}
	}
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := append([]string{"Content-Type", "application/json"}, "Authorization", adminBearer(t, "alice"))
	body := `{"name":"Jane","email":"jane@example.com","calls":1}`
	send(t, "POST", base+"/api/register", body, "Content-Type", "application/json").want(t, 201, `{"message":"Created"}`)
	send(t, "POST", base+"/api/register", body, "Content-Type", "application/json").want(t, 202, `{"message":"Accepted"}`)
	send(t, "PUT", base+"/api/reject", `{"email":"jane@example.com"}`, auth...).want(t, 200, `{"message":"OK"}`)
	send(t, "POST", base+"/api/register", body, "Content-Type", "application/json").want(t, 201, `{"message":"Created"}`)
}

// Over WAITING_LIST_MAX a new person is answered 503 and nothing is stored;
// a listed person is still answered 202.
func TestWaitingListFull(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "WAITING_LIST_MAX": "2"})
	signup := func(email string) response {
		return send(t, "POST", base+"/api/register", `{"name":"N","email":"`+email+`","calls":1}`, "Content-Type", "application/json")
	}
	signup("a@example.com").want(t, 201, `{"message":"Created"}`)
	signup("b@example.com").want(t, 201, `{"message":"Created"}`)
	before := strings.Join(rs.DoList("LRANGE", "waiting-list", "0", "-1"), "\n")
	r := signup("c@example.com")
	r.want(t, 503, `{"message":"Waiting list is full"}`)
	if got := r.header.Get("Retry-After"); got != "3600" {
		t.Errorf("Retry-After %q, want 3600", got)
	}
	signup("A@example.com").want(t, 202, `{"message":"Accepted"}`)
	if got := strings.Join(rs.DoList("LRANGE", "waiting-list", "0", "-1"), "\n"); got != before {
		t.Fatalf("stored while full:\n%s", got)
	}
	if got := rs.Do("HEXISTS", waitlist.PeopleKey, "c@example.com"); got != "0" {
		t.Fatal("the refused person is in the index")
	}
}

// GET /api/pending pages through the list with limit and the cursor of the
// Link header; a page after approvals or rejects of earlier signups starts
// at the first signup not yet shown.
func TestPendingPages(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	elem := func(i int) string {
		return `{"name":"P` + strconv.Itoa(i) + `","email":"p` + strconv.Itoa(i) + `@example.com","building":"","calls":1}`
	}
	for i := range 250 {
		rs.Do("RPUSH", "waiting-list", elem(i))
	}
	want := func(from, to int) string {
		var parts []string
		for i := from; i < to; i++ {
			parts = append(parts, elem(i))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	next := func(r response) string {
		link := r.header.Get("Link")
		if link == "" {
			return ""
		}
		u, rest, ok := strings.Cut(strings.TrimPrefix(link, "<"), ">")
		if !ok || rest != `; rel="next"` {
			t.Fatalf("Link %q", link)
		}
		return u
	}

	r := send(t, "GET", base+"/api/pending", "", auth...)
	r.want(t, 200, want(0, 100))
	u := next(r)
	if !strings.HasPrefix(u, "/api/pending?limit=100&cursor=") {
		t.Fatalf("next %q", u)
	}
	r = send(t, "GET", base+u, "", auth...)
	r.want(t, 200, want(100, 200))
	r = send(t, "GET", base+next(r), "", auth...)
	r.want(t, 200, want(200, 250))
	if l := r.header.Get("Link"); l != "" {
		t.Fatalf("last page has a Link %q", l)
	}
	send(t, "GET", base+"/api/pending?limit=1000", "", auth...).want(t, 200, want(0, 250))

	// Approvals and rejects of earlier signups between two pages.
	r = send(t, "GET", base+"/api/pending?limit=10", "", auth...)
	r.want(t, 200, want(0, 10))
	u = next(r)
	reject := func(i int) {
		send(t, "PUT", base+"/api/reject", `{"email":"p`+strconv.Itoa(i)+`@example.com"}`, append([]string{"Content-Type", "application/json"}, auth...)...).
			want(t, 200, `{"message":"OK"}`)
	}
	for i := range 5 {
		reject(i)
	}
	r = send(t, "GET", base+u, "", auth...)
	r.want(t, 200, want(10, 20))
	u = next(r)
	reject(20) // the first signup the next page would show
	send(t, "GET", base+u, "", auth...).want(t, 200, want(21, 31))

	for _, c := range []struct{ query, want string }{
		{"limit=0", `{"message":"limit must be an integer from 1 to 1000"}`},
		{"limit=1001", `{"message":"limit must be an integer from 1 to 1000"}`},
		{"limit=ten", `{"message":"limit must be an integer from 1 to 1000"}`},
		{"cursor=abc", `{"message":"cursor is not valid"}`},
		{"cursor=0-1-2", `{"message":"cursor is not valid"}`},
		{"cursor=5-zz-1", `{"message":"cursor is not valid"}`},
	} {
		send(t, "GET", base+"/api/pending?"+c.query, "", auth...).want(t, 400, c.want)
	}
}

// A corrupt legacy element whose email the index can read is a person on
// the list: a signup of theirs is a duplicate, approve refuses it (no key is
// written) and reject removes it.
func TestIndexCorruptLegacyElement(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	admin := []string{"Content-Type", "application/json", "Authorization", adminBearer(t, "alice")}
	corrupt := `{"email":"bad@example.com","name":`
	rs.Do("RPUSH", "waiting-list", corrupt)
	send(t, "POST", base+"/api/register", `{"name":"B","email":"bad@example.com","calls":1}`, "Content-Type", "application/json").
		want(t, 202, `{"message":"Accepted"}`)
	send(t, "PUT", base+"/api/approve", `{"email":"bad@example.com","limit":1}`, admin...).want(t, 400, `{"message":"Email does not exists"}`)
	if got := dataKeys(t, rs); len(got) != 1 || got[0] != "waiting-list" {
		t.Fatalf("keys %v, want only the list", got)
	}
	send(t, "PUT", base+"/api/reject", `{"email":"bad@example.com"}`, admin...).want(t, 200, `{"message":"OK"}`)
	if got := rs.Do("EXISTS", "waiting-list", waitlist.PeopleKey, waitlist.PeopleSeenKey); got != "0" {
		t.Fatalf("%s keys left", got)
	}
}

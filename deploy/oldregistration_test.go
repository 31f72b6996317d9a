package deploy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/rueidis"
)

// oldRegistration behaves as the old registration does
// (registration-main.rs; see oldauth_test.go): signups, the pending list,
// approve, revoke and trial keys, with its faults: no authentication on the
// admin routes (805-812), approve rewriting the whole list (152-177), revoke
// writing SET with no key name (232-249). Its emails go nowhere: the model
// keeps those Mailersend would have accepted.
type oldRegistration struct {
	redis rueidis.Client
	// mailersendKey is MAILERSEND_API_KEY (796, empty when unset). Without
	// it Mailersend refuses every email, and approve answers 200 all the
	// same (607-625).
	mailersendKey string

	mu     sync.Mutex
	emails []oldEmail
}

// oldEmail is an email the old registration handed to Mailersend.
type oldEmail struct{ to, token string }

// startOldRegistration serves an oldRegistration on a free loopback port,
// against the Redis at redisAddr, until the test ends.
func startOldRegistration(t *testing.T, redisAddr, mailersendKey string) (*oldRegistration, string) {
	t.Helper()
	g := &oldRegistration{redis: plainClient(t, redisAddr), mailersendKey: mailersendKey}
	s := httptest.NewServer(g)
	t.Cleanup(s.Close)
	return g, s.Listener.Addr().String()
}

func (g *oldRegistration) sent() []oldEmail {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]oldEmail(nil), g.emails...)
}

// Answers of the old registration.
const (
	oldRegInternal = `{"message":"Internal Server Error"}` // 500, 541, 567, 689, 711 …
	oldRegOK       = `{"message":"OK"}`                    // 631, 705
)

// ServeHTTP routes as 805-812 do: no route checks who is asking.
func (g *oldRegistration) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	if route == "GET /healthz" { // 806, 473-475
		reply(w, http.StatusOK, "text/plain; charset=utf-8", "OK")
		return
	}
	handlers := map[string]func(http.ResponseWriter, *http.Request){
		"POST /api/register": g.register, // 807
		"GET /api/pending":   g.pending,  // 808
		"PUT /api/approve":   g.approve,  // 809
		"PUT /api/revoke":    g.revoke,   // 810
		"POST /api/trial":    g.trial,    // 811
	}
	h, ok := handlers[route]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	h(w, r)
}

// jsonBody is axum's Json extractor, as far as the tests need it: a JSON
// Content-Type (else 415), then the body read into fields (serdeStruct) and
// by read (else 422). Its error texts are not modelled.
func jsonBody[T any](w http.ResponseWriter, r *http.Request, fields [][]string, read func(map[string]json.RawMessage) (T, bool)) (T, bool) {
	var v T
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return v, false
	}
	b, _ := io.ReadAll(r.Body)
	f, ok := serdeStruct(string(b), fields, false)
	if ok {
		v, ok = read(f)
	}
	if !ok {
		w.WriteHeader(http.StatusUnprocessableEntity)
	}
	return v, ok
}

// humanUser is a waiting-list element (52-58); a null or missing building
// is None.
type humanUser struct {
	name, email string
	building    *string
	calls       int64
}

var humanUserFields = [][]string{{"name"}, {"email"}, {"building"}, {"calls"}}

func readHumanUser(f map[string]json.RawMessage) (humanUser, bool) {
	var u humanUser
	ok := serdeString(f["name"], &u.name) && serdeString(f["email"], &u.email) && serdeInt(f["calls"], &u.calls)
	if b := f["building"]; ok && b != nil && !isNull(b) {
		u.building = new(string)
		ok = serdeString(b, u.building)
	}
	return u, ok
}

// encode is serde_json::to_string of a HumanUser: the four fields in order,
// None as null.
func (u humanUser) encode() string {
	b := append([]byte(`{"name":`), appendSerdeString(nil, u.name)...)
	b = append(append(b, `,"email":`...), appendSerdeString(nil, u.email)...)
	b = append(b, `,"building":`...)
	if u.building == nil {
		b = append(b, "null"...)
	} else {
		b = appendSerdeString(b, *u.building)
	}
	return string(strconv.AppendInt(append(b, `,"calls":`...), u.calls, 10)) + "}"
}

// errParse is the old registration's ParseError.
var errParse = errors.New("parse error")

// getUsers is 130-149: the whole list, every element read; one that does not
// read fails the call (errParse), as a Redis error does.
func (g *oldRegistration) getUsers(ctx context.Context) ([]humanUser, error) {
	raws, err := g.redis.Do(ctx, g.redis.B().Lrange().Key("waiting-list").Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		return nil, err
	}
	var users []humanUser
	for _, raw := range raws {
		f, ok := serdeStruct(raw, humanUserFields, true)
		if !ok {
			return nil, errParse
		}
		u, ok := readHumanUser(f)
		if !ok {
			return nil, errParse
		}
		users = append(users, u)
	}
	return users, nil
}

// register is 477-509 and 104-128: 202 when the exact email is listed, else
// RPUSH of the signup as serde writes it.
func (g *oldRegistration) register(w http.ResponseWriter, r *http.Request) {
	u, ok := jsonBody(w, r, humanUserFields, readHumanUser)
	if !ok {
		return
	}
	ctx := context.Background()
	users, err := g.getUsers(ctx)
	if err != nil {
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	for _, listed := range users {
		if listed.email == u.email { // 112-117: equal bytes, case and spaces count
			reply(w, http.StatusAccepted, "application/json", `{"message":"Accepted"}`)
			return
		}
	}
	if err := g.redis.Do(ctx, g.redis.B().Rpush().Key("waiting-list").Element(u.encode()).Build()).Error(); err != nil {
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	reply(w, http.StatusCreated, "application/json", `{"message":"Created"}`)
}

// pending is 511-550: every signup, re-encoded.
func (g *oldRegistration) pending(w http.ResponseWriter, _ *http.Request) {
	users, err := g.getUsers(context.Background())
	if err != nil {
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	b := []byte{'['}
	for i, u := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, u.encode()...)
	}
	reply(w, http.StatusOK, "application/json", string(append(b, ']')))
}

// tokenValue is the old registration's TokenValue (60-70): Token (alias
// token, optional), UserEmail (alias email), MonthlyLimit (alias limit),
// Revoked (false when missing).
type tokenValue struct {
	token   *string
	email   string
	limit   int64
	revoked bool
}

var tokenValueFields = [][]string{{"Token", "token"}, {"UserEmail", "email"}, {"MonthlyLimit", "limit"}, {"Revoked"}}

func readTokenValue(f map[string]json.RawMessage) (tokenValue, bool) {
	var v tokenValue
	ok := serdeString(f["UserEmail"], &v.email) && serdeInt(f["MonthlyLimit"], &v.limit)
	if t := f["Token"]; ok && t != nil && !isNull(t) {
		v.token = new(string)
		ok = serdeString(t, v.token)
	}
	if b := f["Revoked"]; ok && b != nil {
		ok = serdeBool(b, &v.revoked)
	}
	return v, ok
}

// encode is serde_json::to_string of a TokenValue: Token is never written
// (62: skip_serializing).
func (v tokenValue) encode() string {
	b := appendSerdeString([]byte(`{"UserEmail":`), v.email)
	b = strconv.AppendInt(append(b, `,"MonthlyLimit":`...), v.limit, 10)
	return string(strconv.AppendBool(append(b, `,"Revoked":`...), v.revoked)) + "}"
}

// userByToken is 251-264: GET <token> read as a TokenValue. found is false
// for no key; ok is false for a Redis error or a value that does not read.
func (g *oldRegistration) userByToken(ctx context.Context, token string) (v tokenValue, found, ok bool) {
	raw, err := g.redis.Do(ctx, g.redis.B().Get().Key(token).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return tokenValue{}, false, true
	}
	if err != nil {
		return tokenValue{}, true, false
	}
	f, ok := serdeStruct(raw, tokenValueFields, false)
	if !ok {
		return tokenValue{}, true, false
	}
	v, ok = readTokenValue(f)
	return v, true, ok
}

// approve is 552-667.
func (g *oldRegistration) approve(w http.ResponseWriter, r *http.Request) {
	body, ok := jsonBody(w, r, tokenValueFields, readTokenValue)
	if !ok {
		return
	}
	ctx := context.Background()
	users, err := g.getUsers(ctx) // 560-577
	if err != nil {
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	var user *humanUser // 580-582: the first with the exact email
	for i := range users {
		if users[i].email == body.email {
			user = &users[i]
			break
		}
	}
	if body.token != nil { // 585-593: a key that reads as a record exists
		if _, found, ok := g.userByToken(ctx, *body.token); found && ok {
			reply(w, http.StatusBadRequest, "application/json", `{"message":"Token already exists"}`)
			return
		}
	}
	if user == nil { // 597-603
		reply(w, http.StatusBadRequest, "application/json", `{"message":"Email does not exists"}`)
		return
	}
	if body.token == nil { // 208-228: EmptyToken, answered 658-663
		reply(w, http.StatusBadRequest, "application/json", `{"message":"User seemed to be approved already"}`)
		return
	}
	rec := tokenValue{email: body.email, limit: body.limit} // 210-215: SET, never NX, no TTL
	if err := g.redis.Do(ctx, g.redis.B().Set().Key(*body.token).Value(rec.encode()).Build()).Error(); err != nil {
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	if g.mailersendKey != "" { // 607-625: a refused email is ignored
		g.mu.Lock()
		g.emails = append(g.emails, oldEmail{to: user.email, token: *body.token})
		g.mu.Unlock()
	}
	// 627, 152-177: the list read again, deleted, and every element with
	// another email pushed back one by one, re-encoded.
	switch users, err = g.getUsers(ctx); {
	case errors.Is(err, errParse): // 641-647
		reply(w, http.StatusBadRequest, "application/json", `{"message":"User seemed to be removed from waiting list already"}`)
		return
	case err != nil: // 633-640
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	if err := g.redis.Do(ctx, g.redis.B().Del().Key("waiting-list").Build()).Error(); err != nil {
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	for _, u := range users {
		if u.email == user.email {
			continue
		}
		if err := g.redis.Do(ctx, g.redis.B().Rpush().Key("waiting-list").Element(u.encode()).Build()).Error(); err != nil {
			reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
			return
		}
	}
	reply(w, http.StatusOK, "application/json", oldRegOK)
}

// revoke is 669-721 and 232-249: the record read, then written back revoked
// under the key its Token field names. No record a service writes has that
// field (62), so the command is SET <value>, without a key: Redis refuses it
// and the answer is 500, the record unchanged.
func (g *oldRegistration) revoke(w http.ResponseWriter, r *http.Request) {
	token, ok := jsonBody(w, r, [][]string{{"token"}}, func(f map[string]json.RawMessage) (token string, ok bool) {
		return token, serdeString(f["token"], &token)
	})
	if !ok {
		return
	}
	ctx := context.Background()
	v, found, ok := g.userByToken(ctx, token)
	switch {
	case !found: // 677-683
		reply(w, http.StatusBadRequest, "application/json", `{"message":"User does not exists"}`)
		return
	case !ok: // 684-698
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	v.revoked = true
	set := g.redis.B().Arbitrary("SET").Args(v.encode()).Build() // an Option<String> key of None adds no argument
	if v.token != nil {
		set = g.redis.B().Set().Key(*v.token).Value(v.encode()).Build()
	}
	if err := g.redis.Do(ctx, set).Error(); err != nil { // 707-714
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	reply(w, http.StatusOK, "application/json", oldRegOK)
}

// trial is 723-762 and 292-321: TRIAL- and 58 alphanumerics, the email
// trial-<20 alphanumerics>@pesto.teknologiumum.com, limit 10, 24 hours.
func (g *oldRegistration) trial(w http.ResponseWriter, _ *http.Request) {
	token := "TRIAL-" + alphanumeric(64-6)
	rec := tokenValue{email: "trial-" + alphanumeric(20) + "@pesto.teknologiumum.com", limit: 10}
	set := g.redis.B().Setex().Key(token).Seconds(24 * 60 * 60).Value(rec.encode()).Build()
	if err := g.redis.Do(context.Background(), set).Error(); err != nil {
		reply(w, http.StatusInternalServerError, "application/json", oldRegInternal)
		return
	}
	reply(w, http.StatusOK, "application/json", `{"token":"`+token+`"}`)
}

// alphanumeric is rand's Alphanumeric distribution (315-321): n characters
// of [A-Za-z0-9], each equally likely.
func alphanumeric(n int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	var c [1]byte
	for i := range b {
		for {
			_, _ = rand.Read(c[:])
			if c[0] < 4*62 { // no bias
				b[i] = chars[c[0]%62]
				break
			}
		}
	}
	return string(b)
}

// Package waitlist is the waiting list (SPEC §1, §3): signups appended
// once per person (Register), read a page at a time (Store.Pending),
// approved into a key and its email (Store.Approve) or rejected
// (Store.Reject); the index of people that makes the duplicate check one
// hash lookup, its keys and its scripts. Every step is one atomic script,
// safe beside the old services, which keep writing the list during a
// migration.
package waitlist

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"pesto/registration/internal/keygen"
	"pesto/shared/apikey"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// The index of people on the waiting list (indexLua). The
// legacy list's name, waiting-list, has no hash tag, so its cluster slot is
// that of the whole name; the tag {waiting-list} hashes the same bytes, so
// every key below is in the list's slot and one script may use them all
// (TestIndexKeysShareTheListSlot checks it against a Redis Cluster).
const (
	PeopleKey     = "pesto:{waiting-list}:people"      // hash: person -> their oldest listed signup
	PeopleMoreKey = "pesto:{waiting-list}:people:more" // hash: person -> further listed signups (legacy duplicates)
	PeopleSeenKey = "pesto:{waiting-list}:people:seen" // hash: n, tail — how far the index covers the list
)

// ApprovingPrefix starts the key that holds an Approval's token from its
// first step until it is complete: pesto:{waiting-list}:approving:<email>
// (email trimmed and lower-cased). The hash tag keeps it in the waiting
// list's cluster slot, beside the outbox.
const ApprovingPrefix = wire.OwnPrefix + "{waiting-list}:approving:"

// indexLua defines the index of people on the waiting list, which makes
// the duplicate check one hash lookup however long the list is (the list
// itself cannot be searched in constant time). ix names its keys: list (the
// waiting list), people (hash: person -> raw value of their oldest listed
// signup), more (hash: person -> how many further signups of theirs are
// listed, which only the old services wrote) and seen (hash: n, how many
// list elements the index covers, and tail, the last of them). All are in
// the waiting list's cluster slot (rediskeys.go).
//
// The old services keep writing to the list during a migration (RPUSH, and
// LREM when their admin approves). sync, which every script runs first,
// brings the index up to date: elements appended since it last looked are
// indexed, and anything else — the list shorter than n, or its element n
// no longer the one recorded as tail — starts the index again from the
// list's head. Either way sync indexes at most 500 elements per call; a
// script that finds the index behind answers indexing, and the caller
// (execIndexed) calls it again, so a long list is indexed in steps between
// which Redis serves everyone else. A person is the email trimmed and
// lower-cased in ASCII (PersonKey).
const indexLua = `
local slower, sfind, smatch = string.lower, string.find, string.match
local function person_of(raw)
  -- Every writer puts "email":"…" as a top-level member (inside a JSON
  -- string a quote is escaped, so the pattern cannot match there); a value
  -- with an escape, or any other layout, is decoded.
  local email = smatch(raw, '"email":"([^"\\]*)"')
  if not email then
    local ok, v = pcall(cjson.decode, raw)
    if not ok or type(v) ~= 'table' or type(v.email) ~= 'string' then return nil end
    email = v.email
  end
  return slower(smatch(email, '^%s*(.*%S)') or '')
end
local function add(ix, raw)
  local person = person_of(raw)
  if not person then return end
  if redis.call('HSETNX', ix.people, person, raw) == 0 then
    redis.call('HINCRBY', ix.more, person, 1)
  end
end
-- mark records that the index covers the whole list.
local function mark(ix)
  local len = redis.call('LLEN', ix.list)
  if len == 0 then
    redis.call('DEL', ix.people, ix.more, ix.seen)
    return 0
  end
  redis.call('HSET', ix.seen, 'n', len, 'tail', redis.call('LINDEX', ix.list, -1))
  return len
end
local function reset(ix)
  redis.call('DEL', ix.people, ix.more)
  redis.call('HSET', ix.seen, 'n', 0, 'tail', '')
  return 0
end
-- sync indexes what was appended since, at most step elements per call
-- (a long list is indexed over several calls, Redis serving others in
-- between). It returns the list's length and whether the index covers it.
local step = 500
local function sync(ix)
  local len = redis.call('LLEN', ix.list)
  if len == 0 then
    -- An empty list has an empty index: no keys at all.
    redis.call('DEL', ix.people, ix.more, ix.seen)
    return 0, true
  end
  local seen = redis.call('HMGET', ix.seen, 'n', 'tail')
  local n = tonumber(seen[1])
  if n == nil or n > len then
    n = reset(ix)
  elseif n > 0 and redis.call('LINDEX', ix.list, n - 1) ~= seen[2] then
    n = reset(ix)
  end
  if n == len then return len, true end
  local last = math.min(len, n + step) - 1
  local new = redis.call('LRANGE', ix.list, n, last)
  for i = 1, #new do add(ix, new[i]) end
  redis.call('HSET', ix.seen, 'n', last + 1, 'tail', new[#new])
  return len, last + 1 == len
end
-- forget updates the index after raw was removed from the list (LREM),
-- the index covering the list before.
local function forget(ix, raw)
  local person = person_of(raw)
  if person then
    local more = tonumber(redis.call('HGET', ix.more, person) or '0')
    if more > 0 and redis.call('HGET', ix.people, person) == raw then
      -- The person's oldest signup went and another is listed: which one
      -- is now the oldest takes a pass over the list. Only signups the old
      -- services wrote twice lead here.
      return reset(ix)
    elseif more > 1 then
      redis.call('HINCRBY', ix.more, person, -1)
    elseif more == 1 then
      redis.call('HDEL', ix.more, person)
    else
      redis.call('HDEL', ix.people, person)
    end
  end
  return mark(ix)
end
local function keys_from(first)
  return {list = KEYS[first], people = KEYS[first + 1], more = KEYS[first + 2], seen = KEYS[first + 3]}
end
-- indexing is the reply of a script that found the index behind the list
-- after one step of sync: the caller runs it again.
local indexing = -2
`

// indexing is what a script of the index answers when it has indexed one
// step of a list the index did not cover yet (indexLua).
const indexing = -2

// execIndexed runs a script of the index, again as long as it answers
// indexing (each run indexes one more step), within ctx.
func execIndexed(ctx context.Context, c rueidis.Client, script *rueidis.Lua, keys, args []string) rueidis.RedisResult {
	for {
		res := script.Exec(ctx, c, keys, args)
		if n, err := res.AsInt64(); err != nil || n != indexing {
			return res
		}
		if ctx.Err() != nil {
			return script.Exec(ctx, c, keys, args) // the context's error
		}
	}
}

// syncScript brings the index up to the list, one step per call.
var syncScript = rueidis.NewLuaScript(indexLua + `
local _, done = sync(keys_from(1))
if not done then return indexing end
return 1
`)

// Warm indexes the list at start, so that signups after a deployment
// on a list the old services wrote do not wait for it: it retries (Redis
// may be down) until the index covers the list once, or ctx ends.
func Warm(ctx context.Context, conn *redisconn.Conn, log *slog.Logger) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		if c, err := conn.Client(); err == nil {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = execIndexed(sctx, c, syncScript, indexKeys, nil).Error()
			cancel()
			if err == nil {
				log.Debug("waiting-list index covers the list")
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// indexKeys are the keys every script of the index takes, in this order
// (indexLua's keys_from).
var indexKeys = []string{wire.WaitingList, PeopleKey, PeopleMoreKey, PeopleSeenKey}

// registerScript appends a signup unless the same person is on the list or
// the list is full: the check and the RPUSH are one atomic step, so racing
// signups of one email leave one entry. Returns 1 when appended, 0 when
// already listed, -1 when the list is full.
var registerScript = rueidis.NewLuaScript(indexLua + `
local ix = keys_from(1)
local signup = ARGV[1] -- as stored
local person = ARGV[2] -- PersonKey of its email
local max = tonumber(ARGV[3])
local len, done = sync(ix)
if not done then return indexing end
if redis.call('HEXISTS', ix.people, person) == 1 then return 0 end
if len >= max then return -1 end
redis.call('RPUSH', ix.list, signup)
redis.call('HSET', ix.people, person, signup)
redis.call('HSET', ix.seen, 'n', len + 1, 'tail', signup)
return 1
`)

// PersonKey returns how the scripts compare emails: trimmed and lower-cased
// in ASCII, as Lua's string.lower does. (Two addresses that differ only in
// the case of a non-ASCII letter count as two people.)
func PersonKey(email string) string {
	email = strings.TrimSpace(email)
	b := []byte(email)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// Errors of the waiting list.
var (
	// ErrListFull: the waiting list holds WAITING_LIST_MAX signups.
	ErrListFull = errors.New("the waiting list is full")
	// ErrEmailNotListed: no signup of the person is on the list.
	ErrEmailNotListed = errors.New("the email is not on the waiting list")
	// ErrTokenExists: the token of an Approval names an existing key.
	ErrTokenExists = errors.New("the token names an existing key")
	// ErrBadCursor: a cursor that pending did not make.
	ErrBadCursor = errors.New("not a cursor of the waiting list")
)

// Register stores s unless the same person is listed (created is false) or
// the list holds max signups (ErrListFull).
func Register(ctx context.Context, conn *redisconn.Conn, s wire.Signup, max int) (created bool, err error) {
	c, err := conn.Client()
	if err != nil {
		return false, err
	}
	n, err := execIndexed(ctx, c, registerScript, indexKeys,
		[]string{string(s.Encode()), PersonKey(s.Email), strconv.Itoa(max)}).AsInt64()
	if err != nil {
		return false, err
	}
	if n < 0 {
		return false, ErrListFull
	}
	return n == 1, nil
}

// ApprovingKey is the key of an unfinished approval of email.
func ApprovingKey(email string) string { return ApprovingPrefix + PersonKey(email) }

// claimScript is approve's first step on the waiting list's side. It finds
// the signup and records the token of this Approval under the approving key,
// unless an earlier attempt recorded one: then that token is kept, so that a
// repeated approve completes the first attempt. Returns {} when the signup is not listed (and forgets a stale approving key), else
// {signup, token to use}.
var claimScript = rueidis.NewLuaScript(indexLua + `
local ix = keys_from(1)
local approving_key = KEYS[5]
local person = ARGV[1] -- PersonKey
local new_token = ARGV[2]
local _, done = sync(ix)
if not done then return indexing end
local raw = redis.call('HGET', ix.people, person)
if not raw then
  redis.call('DEL', approving_key)
  return {}
end
local token = redis.call('GET', approving_key)
if not token then
  token = new_token
  redis.call('SET', approving_key, token)
end
return {raw, token}
`)

// completeScript is approve's last step: it removes the signup (that one
// element, never the whole list) and queues the key's email in one atomic
// step, and forgets the approving key. When the signup is already gone
// (a racing approve completed it) nothing is queued. Returns 1 when queued.
var completeScript = rueidis.NewLuaScript(indexLua + `
local ix = keys_from(1)
local approving_key, outbox_key = KEYS[5], KEYS[6]
local raw = ARGV[1] -- the signup's element, as listed
-- ARGV[2] onwards: the email's stream fields
local _, done = sync(ix)
if not done then return indexing end
local removed = redis.call('LREM', ix.list, 1, raw)
redis.call('DEL', approving_key)
if removed == 0 then return 0 end
forget(ix, raw)
redis.call('XADD', outbox_key, '*', unpack(ARGV, 2))
return 1
`)

// rejectScript removes a person's signup. Returns {removed} with removed
// 1 or 0 (not listed), or {removed, token} when the approving key names the
// token of an unfinished Approval of the person. That key was never
// delivered (its email is queued only in the step that removes the signup),
// so the caller deletes its record and then the approving key; the
// approving key is left until then, so that a reject repeated after a crash
// in between finishes the clean-up.
var rejectScript = rueidis.NewLuaScript(indexLua + `
local ix = keys_from(1)
local approving_key = KEYS[5]
local person = ARGV[1] -- PersonKey
local _, done = sync(ix)
if not done then return indexing end
local raw = redis.call('HGET', ix.people, person)
local removed = 0
if raw then removed = redis.call('LREM', ix.list, 1, raw) end
if removed == 1 then forget(ix, raw) end
local token = redis.call('GET', approving_key)
if token then return {removed, token} end
return {removed}
`)

// Store is the waiting list's side of the admin API.
type Store struct {
	conn *redisconn.Conn
	keys apikey.Keys // records, in either form; new ones in the configured form
	log  *slog.Logger
}

// New returns the store of the waiting list on conn; keys writes the
// records of approved keys, and log is told of corrupt elements.
func New(conn *redisconn.Conn, keys apikey.Keys, log *slog.Logger) *Store {
	return &Store{conn: conn, keys: keys, log: log}
}

// pendingWindow is how far back, from a cursor's offset, pending looks for
// where the previous page ended: signups removed before it since move the
// rest towards the head.
const pendingWindow = 1000

// Pending returns up to limit signups of the waiting list, oldest first,
// from cursor ("" for the head), as a JSON array, and the cursor of the
// next page ("" when none follows); corrupt elements are logged and left
// out. It reads at most limit+1 elements, and pendingWindow+1 more to
// place a cursor, whatever the list's length.
//
// A cursor names the position after the page and the elements either side
// of it (their FNV-64a digests): the next page starts at the first element
// not shown, found again even when signups before it were approved or
// rejected meanwhile (it moved towards the head); when it was removed too,
// after the last element shown; when both were, at most pendingWindow
// elements earlier (a page may then repeat signups, never skip one).
func (s *Store) Pending(ctx context.Context, limit int, cursor string) (page []byte, next string, err error) {
	c, err := s.conn.Client()
	if err != nil {
		return nil, "", err
	}
	start := 0
	if cursor != "" {
		cur, ok := parseCursor(cursor)
		if !ok {
			return nil, "", ErrBadCursor
		}
		lo := max(0, cur.offset-pendingWindow)
		raws, err := c.Do(ctx, c.B().Lrange().Key(wire.WaitingList).Start(int64(lo)).Stop(int64(cur.offset)).Build()).AsStrSlice()
		if err != nil {
			return nil, "", err
		}
		start = lo
		if i := lastIndexDigest(raws, cur.next); i >= 0 {
			start = lo + i
		} else if i := lastIndexDigest(raws, cur.last); i >= 0 {
			start = lo + i + 1
		}
	}
	raws, err := c.Do(ctx, c.B().Lrange().Key(wire.WaitingList).Start(int64(start)).Stop(int64(start+limit)).Build()).AsStrSlice()
	if err != nil {
		return nil, "", err
	}
	shown := raws[:min(limit, len(raws))]
	if len(raws) > limit {
		next = pageCursor{offset: start + limit, last: digest(shown[len(shown)-1]), next: digest(raws[limit])}.String()
	}
	out := make([]byte, 0, 2+len(shown)*96)
	out = append(out, '[')
	n := 0
	for i, raw := range shown {
		su, err := wire.DecodeSignup(raw)
		if err != nil {
			s.log.Warn("corrupt waiting-list element skipped", "index", start+i, "err", err.Error())
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, su.Encode()...)
		n++
	}
	return append(out, ']'), next, nil
}

// pageCursor is where a page of pending ended (see pending).
type pageCursor struct {
	offset     int
	last, next uint64 // digests of the last element shown and the next one
}

// String writes the cursor as <offset>-<last>-<next>, digests in hex.
func (p pageCursor) String() string {
	return strconv.Itoa(p.offset) + "-" + strconv.FormatUint(p.last, 16) + "-" + strconv.FormatUint(p.next, 16)
}

func parseCursor(v string) (pageCursor, bool) {
	parts := strings.Split(v, "-")
	if len(parts) != 3 || len(v) > 64 {
		return pageCursor{}, false
	}
	var p pageCursor
	var err1, err2, err3 error
	p.offset, err1 = strconv.Atoi(parts[0])
	p.last, err2 = strconv.ParseUint(parts[1], 16, 64)
	p.next, err3 = strconv.ParseUint(parts[2], 16, 64)
	return p, err1 == nil && err2 == nil && err3 == nil && p.offset > 0
}

// digest identifies a list element in a cursor.
func digest(raw string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(raw))
	return h.Sum64()
}

// lastIndexDigest returns the index of the last of raws with digest d, or -1.
func lastIndexDigest(raws []string, d uint64) int {
	for i := len(raws) - 1; i >= 0; i-- {
		if digest(raws[i]) == d {
			return i
		}
	}
	return -1
}

// Approval is a request of PUT /api/approve.
type Approval struct {
	Email string
	Limit int64
	Token string // "" to generate one
	// Rate is the key's own rate (its record's Rate); the zero Rate: none.
	Rate wire.Rate
	// Expires is when the key expires, kept as its record's TTL (the
	// record's bytes are those of a key that does not); zero: never.
	Expires time.Time
}

// Approve gives the listed person a key: SET NX of the record, then one
// atomic step that removes the signup and queues the email. The token is
// recorded under the approving key before the record is written, so that a
// repeated approve after a crash between the steps completes the first
// attempt with its token (whatever token the repeat names): one record, one
// email. It returns the token.
func (s *Store) Approve(ctx context.Context, a Approval) (string, error) {
	return s.approveOnce(ctx, a, true)
}

func (s *Store) approveOnce(ctx context.Context, a Approval, mayFollow bool) (string, error) {
	c, err := s.conn.Client()
	if err != nil {
		return "", err
	}
	approving := ApprovingKey(a.Email)
	key := PersonKey(a.Email)

	first, err := c.Do(ctx, c.B().Get().Key(approving).Build()).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return "", err
	}
	// The old order: first whether the token is taken, then whether the
	// email is listed. The token of this person's unfinished Approval is
	// not "taken": it is the one to complete.
	token, written, err := s.pickToken(ctx, c, a, first)
	if err != nil {
		return "", err
	}

	res, err := execIndexed(ctx, c, claimScript, append(indexKeys[:len(indexKeys):len(indexKeys)], approving), []string{key, token}).AsStrSlice()
	if err != nil {
		return "", err
	}
	if len(res) != 2 {
		return "", ErrEmailNotListed
	}
	raw, claimed := res[0], res[1]
	if claimed != token {
		// A racing approve of the same person claimed it first: complete
		// that one.
		if !mayFollow {
			return "", ErrTokenExists
		}
		return s.approveOnce(ctx, a, false)
	}
	signup, err := wire.DecodeSignup(raw)
	if err != nil {
		// The index read the email of a corrupt element (a legacy writer's):
		// it cannot be approved, only rejected.
		_ = c.Do(ctx, c.B().Del().Key(approving).Build()).Error()
		return "", ErrEmailNotListed
	}

	limit := a.Limit
	if written != nil {
		limit = written.MonthlyLimit // the first attempt's record is the truth
	} else {
		rec := wire.TokenRecord{UserEmail: strings.TrimSpace(signup.Email), MonthlyLimit: a.Limit, Rate: a.Rate}
		var exp apikey.Expiry
		if !a.Expires.IsZero() {
			exp = apikey.At(a.Expires)
		}
		created, err := s.keys.Create(ctx, c, token, rec, exp)
		switch {
		case err != nil:
			return "", err
		case !created:
			// The key was written since pickToken: unless by a racing
			// approve of this person, it is not ours to hand out.
			got, _, rerr := s.keys.Record(ctx, c, token)
			if rerr != nil {
				return "", rerr
			}
			if got == nil || !wire.SamePerson(got.UserEmail, a.Email) {
				_ = c.Do(ctx, c.B().Del().Key(approving).Build()).Error()
				return "", ErrTokenExists
			}
			limit = got.MonthlyLimit
		}
	}

	mail := wire.KeyEmail{To: strings.TrimSpace(signup.Email), Name: signup.Name, Token: token, Limit: limit}
	if _, err := execIndexed(ctx, c, completeScript, append(indexKeys[:len(indexKeys):len(indexKeys)], approving, wire.OutboxStream),
		append([]string{raw}, mail.Fields()...)).AsInt64(); err != nil {
		return "", err
	}
	return token, nil
}

// pickToken chooses the token of an Approval: the unfinished first
// attempt's (first), else the admin's, else a new one. written is the first
// attempt's record when it was already written. A token that names any
// other existing key is ErrTokenExists (a generated one is drawn again).
func (s *Store) pickToken(ctx context.Context, c rueidis.Client, a Approval, first string) (token string, written *wire.TokenRecord, err error) {
	if first != "" {
		rec, taken, err := s.keys.Record(ctx, c, first)
		switch {
		case err != nil:
			return "", nil, err
		case !taken:
			return first, nil, nil
		case rec != nil && wire.SamePerson(rec.UserEmail, a.Email):
			return first, rec, nil
		}
		// Someone else's key: the approving key is stale. Start afresh.
		if err := c.Do(ctx, c.B().Del().Key(ApprovingKey(a.Email)).Build()).Error(); err != nil {
			return "", nil, err
		}
	}
	for range 3 {
		token = a.Token
		if token == "" {
			token = keygen.Approved()
		}
		_, taken, err := s.keys.Record(ctx, c, token)
		if err != nil {
			return "", nil, err
		}
		if !taken {
			return token, nil, nil
		}
		if a.Token != "" {
			return "", nil, ErrTokenExists
		}
	}
	return "", nil, keygen.ErrCollision
}

// Reject removes the person's signup; removed is false when it is not
// listed. When an Approval of the person was left unfinished (the process
// died between its steps), the key it claimed was never emailed: its record
// is deleted too, so that no live key is left that nobody received, then
// the approving key. The signup goes in one atomic step; the record lives
// in another cluster slot and is deleted after it, only while it is still
// this person's unchanged record, and every step may be repeated: a reject
// repeated after a crash in between finishes the clean-up (and answers that
// the email is not listed). discarded is the deleted record's token, or "".
func (s *Store) Reject(ctx context.Context, email string) (removed bool, discarded string, err error) {
	c, err := s.conn.Client()
	if err != nil {
		return false, "", err
	}
	approving := ApprovingKey(email)
	res, err := execIndexed(ctx, c, rejectScript, append(indexKeys[:len(indexKeys):len(indexKeys)], approving),
		[]string{PersonKey(email)}).ToArray()
	if err != nil {
		return false, "", err
	}
	if len(res) == 0 {
		return false, "", errors.New("reject: empty script reply")
	}
	n, err := res[0].AsInt64()
	if err != nil {
		return false, "", err
	}
	removed = n == 1
	if len(res) < 2 {
		return removed, "", nil
	}
	token, err := res[1].ToString()
	if err != nil {
		return removed, "", err
	}
	deleted, err := s.keys.DeleteIfOwner(ctx, c, token, email)
	if err != nil {
		return removed, "", err
	}
	if deleted {
		discarded = token
	}
	return removed, discarded, c.Do(ctx, c.B().Del().Key(approving).Build()).Error()
}

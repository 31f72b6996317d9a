package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// findSignupLua defines find(list, email): the search of the waiting list
// for a signup of the same person, shared by every script that looks one
// up. email is the address trimmed and ASCII-lower-cased (personKey). The
// list may hold 10,000 elements, so each is first checked as plain text,
// without decoding it: at each '@' in it, the bytes either side are
// compared with the email's, and only then the whole address, lower-cased.
// An element is decoded (cjson) only when that matches, or when it holds an
// escape (a legacy writer may have written "\u002B" for "+"). It returns
// the first matching element's raw value, or nil.
const findSignupLua = `
local sfind, sbyte, slower, ssub = string.find, string.byte, string.lower, string.sub
local function same(raw, email)
  local ok, v = pcall(cjson.decode, raw)
  if not ok or type(v) ~= 'table' or type(v.email) ~= 'string' then return false end
  return slower((string.gsub(v.email, '^%s*(.-)%s*$', '%1'))) == email
end
local function find(list, email)
  local at = sfind(email, '@', 1, true)
  local n = #email
  local b1, B1, b2, B2 = -1, -1, -1, -1
  local fast = at and at > 1 and at < n
  if fast then
    b1 = sbyte(email, at - 1)
    B1 = sbyte(string.upper(string.char(b1)))
    b2 = sbyte(email, at + 1)
    B2 = sbyte(string.upper(string.char(b2)))
  end
  local len = redis.call('LLEN', list)
  for first = 0, len - 1, 1000 do
    local chunk = redis.call('LRANGE', list, first, first + 999)
    for i = 1, #chunk do
      local raw = chunk[i]
      local maybe = sfind(raw, '\\', 1, true) ~= nil
      if not maybe then
        if fast then
          local p = sfind(raw, '@', at, true)
          while p do
            local x, _, y = sbyte(raw, p - 1, p + 1)
            if (x == b1 or x == B1) and (y == b2 or y == B2) and slower(ssub(raw, p - at + 1, p - at + n)) == email then
              maybe = true
              break
            end
            p = sfind(raw, '@', p + 1, true)
          end
        else
          maybe = sfind(slower(raw), email, 1, true) ~= nil
        end
      end
      if maybe and same(raw, email) then return raw end
    end
  end
  return nil
end
`

// registerScript appends a signup unless the same person is on the list:
// the check and the RPUSH are one atomic step, so racing signups of one
// email leave one entry. Returns 1 when appended, 0 when already listed.
var registerScript = rueidis.NewLuaScript(findSignupLua + `
local list_key = KEYS[1]
local signup = ARGV[1] -- as stored
local email = ARGV[2] -- its email for find (personKey)
if find(list_key, email) then return 0 end
redis.call('RPUSH', list_key, signup)
return 1
`)

// personKey returns how the scripts compare emails: trimmed and lower-cased
// in ASCII, as Lua's string.lower does. (Two addresses that differ only in
// the case of a non-ASCII letter count as two people.)
func personKey(email string) string {
	email = strings.TrimSpace(email)
	b := []byte(email)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// register stores s unless the same person is listed; created tells which.
func register(ctx context.Context, conn *redisconn.Conn, s wire.Signup) (created bool, err error) {
	c, err := conn.Client()
	if err != nil {
		return false, err
	}
	n, err := registerScript.Exec(ctx, c, []string{wire.WaitingList},
		[]string{string(s.Encode()), personKey(s.Email)}).AsInt64()
	return n == 1, err
}

func approvingKey(email string) string { return approvingPrefix + personKey(email) }

// claimScript is approve's first step on the waiting list's side. It finds
// the signup and records the token of this approval under the approving key,
// unless an earlier attempt recorded one: then that token is kept, so that a
// repeated approve completes the first attempt. Returns {} when the signup is not listed (and forgets a stale approving key), else
// {signup, token to use}.
var claimScript = rueidis.NewLuaScript(findSignupLua + `
local list_key, approving_key = KEYS[1], KEYS[2]
local email = ARGV[1] -- personKey
local new_token = ARGV[2]
local raw = find(list_key, email)
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
var completeScript = rueidis.NewLuaScript(`
local list_key, approving_key, outbox_key = KEYS[1], KEYS[2], KEYS[3]
local raw = ARGV[1] -- the signup's element, as listed
-- ARGV[2] onwards: the email's stream fields
local removed = redis.call('LREM', list_key, 1, raw)
redis.call('DEL', approving_key)
if removed == 0 then return 0 end
redis.call('XADD', outbox_key, '*', unpack(ARGV, 2))
return 1
`)

// rejectScript removes a person's signup. Returns {removed} with removed
// 1 or 0 (not listed), or {removed, token} when the approving key names the
// token of an unfinished approval of the person. That key was never
// delivered (its email is queued only in the step that removes the signup),
// so the caller deletes its record and then the approving key; the
// approving key is left until then, so that a reject repeated after a crash
// in between finishes the clean-up.
var rejectScript = rueidis.NewLuaScript(findSignupLua + `
local list_key, approving_key = KEYS[1], KEYS[2]
local email = ARGV[1] -- personKey
local raw = find(list_key, email)
local removed = 0
if raw then removed = redis.call('LREM', list_key, 1, raw) end
local token = redis.call('GET', approving_key)
if token then return {removed, token} end
return {removed}
`)

// deleteIfScript deletes a record only while it still holds the value
// read, so that a record rewritten meanwhile (revoked, or someone else's) is
// kept. Returns 1 when deleted.
var deleteIfScript = rueidis.NewLuaScript(`
local record_key = KEYS[1]
local read = ARGV[1]
if redis.call('GET', record_key) == read then return redis.call('DEL', record_key) end
return 0
`)

// adminStore is the Redis side of the admin API.
type adminStore struct {
	conn *redisconn.Conn
	log  *slog.Logger
}

// pending returns the waiting list, oldest first, as a JSON array; corrupt
// elements are logged and left out.
func (s *adminStore) pending(ctx context.Context) ([]byte, error) {
	c, err := s.conn.Client()
	if err != nil {
		return nil, err
	}
	raws, err := c.Do(ctx, c.B().Lrange().Key(wire.WaitingList).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 2+len(raws)*96)
	out = append(out, '[')
	n := 0
	for i, raw := range raws {
		su, err := wire.DecodeSignup(raw)
		if err != nil {
			s.log.Warn("corrupt waiting-list element skipped", "index", i, "err", err.Error())
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, su.Encode()...)
		n++
	}
	return append(out, ']'), nil
}

// approval is a request of PUT /api/approve.
type approval struct {
	Email string
	Limit int64
	Token string // "" to generate one
}

// approve gives the listed person a key: SET NX of the record, then one
// atomic step that removes the signup and queues the email. The token is
// recorded under the approving key before the record is written, so that a
// repeated approve after a crash between the steps completes the first
// attempt with its token (whatever token the repeat names): one record, one
// email. It returns the token.
func (s *adminStore) approve(ctx context.Context, a approval) (string, error) {
	return s.approveOnce(ctx, a, true)
}

func (s *adminStore) approveOnce(ctx context.Context, a approval, mayFollow bool) (string, error) {
	c, err := s.conn.Client()
	if err != nil {
		return "", err
	}
	wl, approving := wire.WaitingList, approvingKey(a.Email)
	key := personKey(a.Email)

	first, err := c.Do(ctx, c.B().Get().Key(approving).Build()).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return "", err
	}
	// The old order: first whether the token is taken, then whether the
	// email is listed. The token of this person's unfinished approval is
	// not "taken": it is the one to complete.
	token, written, err := s.pickToken(ctx, c, a, first)
	if err != nil {
		return "", err
	}

	res, err := claimScript.Exec(ctx, c, []string{wl, approving}, []string{key, token}).AsStrSlice()
	if err != nil {
		return "", err
	}
	if len(res) != 2 {
		return "", errEmailNotListed
	}
	raw, claimed := res[0], res[1]
	if claimed != token {
		// A racing approve of the same person claimed it first: complete
		// that one.
		if !mayFollow {
			return "", errTokenExists
		}
		return s.approveOnce(ctx, a, false)
	}
	signup, err := wire.DecodeSignup(raw)
	if err != nil {
		return "", err // find decoded it, so this cannot happen
	}

	limit := a.Limit
	if written != nil {
		limit = written.MonthlyLimit // the first attempt's record is the truth
	} else {
		rec := wire.TokenRecord{UserEmail: strings.TrimSpace(signup.Email), MonthlyLimit: a.Limit}
		err := c.Do(ctx, c.B().Set().Key(token).Value(rueidis.BinaryString(rec.Encode())).Nx().Build()).Error()
		switch {
		case rueidis.IsRedisNil(err):
			// The key was written since pickToken: unless by a racing
			// approve of this person, it is not ours to hand out.
			got, _, rerr := s.record(ctx, c, token)
			if rerr != nil {
				return "", rerr
			}
			if got == nil || !wire.SamePerson(got.UserEmail, a.Email) {
				_ = c.Do(ctx, c.B().Del().Key(approving).Build()).Error()
				return "", errTokenExists
			}
			limit = got.MonthlyLimit
		case err != nil:
			return "", err
		}
	}

	mail := keyEmail{To: strings.TrimSpace(signup.Email), Name: signup.Name, Token: token, Limit: limit}
	if _, err := completeScript.Exec(ctx, c, []string{wl, approving, outboxStream},
		append([]string{raw}, mail.fields()...)).AsInt64(); err != nil {
		return "", err
	}
	return token, nil
}

// pickToken chooses the token of an approval: the unfinished first
// attempt's (first), else the admin's, else a new one. written is the first
// attempt's record when it was already written. A token that names any
// other existing key is errTokenExists (a generated one is drawn again).
func (s *adminStore) pickToken(ctx context.Context, c rueidis.Client, a approval, first string) (token string, written *wire.TokenRecord, err error) {
	if first != "" {
		rec, taken, err := s.record(ctx, c, first)
		switch {
		case err != nil:
			return "", nil, err
		case !taken:
			return first, nil, nil
		case rec != nil && wire.SamePerson(rec.UserEmail, a.Email):
			return first, rec, nil
		}
		// Someone else's key: the approving key is stale. Start afresh.
		if err := c.Do(ctx, c.B().Del().Key(approvingKey(a.Email)).Build()).Error(); err != nil {
			return "", nil, err
		}
	}
	for range 3 {
		token = a.Token
		if token == "" {
			token = randomAlphanumeric(approvedKeyChars)
		}
		_, taken, err := s.record(ctx, c, token)
		if err != nil {
			return "", nil, err
		}
		if !taken {
			return token, nil, nil
		}
		if a.Token != "" {
			return "", nil, errTokenExists
		}
	}
	return "", nil, errCollision
}

// record reads the record under token with a plain GET (never the cache):
// taken is whether the key exists; rec is nil when it is not a readable
// token record.
func (s *adminStore) record(ctx context.Context, c rueidis.Client, token string) (rec *wire.TokenRecord, taken bool, err error) {
	raw, err := c.Do(ctx, c.B().Get().Key(token).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	if err != nil {
		if _, ok := rueidis.IsRedisErr(err); ok {
			return nil, true, nil // e.g. WRONGTYPE: a key, but not a record
		}
		return nil, false, err
	}
	r, derr := wire.DecodeTokenRecord(raw)
	if derr != nil {
		return nil, true, nil
	}
	return &r, true, nil
}

// revoke sets Revoked on token's record, keeping its email, limit and TTL.
func (s *adminStore) revoke(ctx context.Context, token string) error {
	c, err := s.conn.Client()
	if err != nil {
		return err
	}
	raw, err := c.Do(ctx, c.B().Get().Key(token).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return errUserNotExists
	}
	if _, ok := rueidis.IsRedisErr(err); ok {
		return errUserNotExists // WRONGTYPE: a key, but no token record
	}
	if err != nil {
		return err
	}
	rec, err := wire.DecodeTokenRecord(raw)
	if err != nil {
		return err
	}
	rec.Revoked = true
	err = c.Do(ctx, c.B().Set().Key(token).Value(rueidis.BinaryString(rec.Encode())).Xx().Keepttl().Build()).Error()
	if rueidis.IsRedisNil(err) {
		return errUserNotExists // expired or deleted meanwhile
	}
	return err
}

// reject removes the person's signup; removed is false when it is not
// listed. When an approval of the person was left unfinished (the process
// died between its steps), the key it claimed was never emailed: its record
// is deleted too, so that no live key is left that nobody received, then
// the approving key. The signup goes in one atomic step; the record lives
// in another cluster slot and is deleted after it, only while it is still
// this person's unchanged record, and every step may be repeated: a reject
// repeated after a crash in between finishes the clean-up (and answers that
// the email is not listed). discarded is the deleted record's token, or "".
func (s *adminStore) reject(ctx context.Context, email string) (removed bool, discarded string, err error) {
	c, err := s.conn.Client()
	if err != nil {
		return false, "", err
	}
	approving := approvingKey(email)
	res, err := rejectScript.Exec(ctx, c, []string{wire.WaitingList, approving},
		[]string{personKey(email)}).ToArray()
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
	if discarded, err = s.discardUnfinished(ctx, c, email, token); err != nil {
		return removed, "", err
	}
	return removed, discarded, c.Do(ctx, c.B().Del().Key(approving).Build()).Error()
}

// discardUnfinished deletes the record under token when it is email's and
// unchanged since read; it returns token when it deleted it.
func (s *adminStore) discardUnfinished(ctx context.Context, c rueidis.Client, email, token string) (string, error) {
	raw, err := c.Do(ctx, c.B().Get().Key(token).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", nil // the approval died before writing its record
	}
	if _, ok := rueidis.IsRedisErr(err); ok {
		return "", nil // WRONGTYPE: not a record, so not ours
	}
	if err != nil {
		return "", err
	}
	rec, derr := wire.DecodeTokenRecord(raw)
	if derr != nil || !wire.SamePerson(rec.UserEmail, email) {
		return "", nil // someone else's key: the approving key was stale
	}
	n, err := deleteIfScript.Exec(ctx, c, []string{token}, []string{raw}).AsInt64()
	if err != nil || n == 0 {
		return "", err
	}
	return token, nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/shared/logging"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// approvingPrefix starts the key that holds an approval's token from its
// first step until it is complete: pesto:{waiting-list}:approving:<email>
// (email trimmed and lower-cased). The hash tag keeps it in the waiting
// list's cluster slot, beside the outbox.
const approvingPrefix = wire.OwnPrefix + "{waiting-list}:approving:"

func approvingKey(email string) string { return approvingPrefix + personKey(email) }

// maxTokenLen bounds an admin-supplied token, as auth does.
const maxTokenLen = 256

// Admin validation messages; each names its field.
const (
	msgApproveEmail = "email is required"
	msgEmailType    = "email must be a string"
	msgLimit        = "limit must be a positive integer"
	msgLimitMissing = "limit is required"
	msgToken        = "token must be 1 to 256 printable ASCII characters and not a reserved key"
	msgTokenMissing = "token is required"
	msgTokenType    = "token must be a string"
)

// claimScript is approve's first step on the waiting list's side. It finds
// the signup and records the token of this approval under the approving key,
// unless an earlier attempt recorded one: then that token is kept, so that a
// repeated approve completes the first attempt. KEYS[1] waiting list,
// KEYS[2] approving key; ARGV[1] email (personKey), ARGV[2] token. Returns
// {} when the signup is not listed (and forgets a stale approving key), else
// {signup, token to use}.
var claimScript = rueidis.NewLuaScript(findSignupLua + `
local raw = find(KEYS[1], ARGV[1])
if not raw then
  redis.call('DEL', KEYS[2])
  return {}
end
local token = redis.call('GET', KEYS[2])
if not token then
  token = ARGV[2]
  redis.call('SET', KEYS[2], token)
end
return {raw, token}
`)

// completeScript is approve's last step: it removes the signup (that one
// element, never the whole list) and queues the key's email in one atomic
// step, and forgets the approving key. When the signup is already gone
// (a racing approve completed it) nothing is queued. KEYS[1] waiting list,
// KEYS[2] approving key, KEYS[3] outbox stream; ARGV[1] the signup's raw
// element, ARGV[2..] the email's stream fields. Returns 1 when queued.
var completeScript = rueidis.NewLuaScript(`
local removed = redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('DEL', KEYS[2])
if removed == 0 then return 0 end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 2))
return 1
`)

// rejectScript removes a person's signup. KEYS[1] waiting list, KEYS[2]
// approving key; ARGV[1] email (personKey). Returns {removed} with removed
// 1 or 0 (not listed), or {removed, token} when the approving key names the
// token of an unfinished approval of the person. That key was never
// delivered (its email is queued only in the step that removes the signup),
// so the caller deletes its record and then the approving key; the
// approving key is left until then, so that a reject repeated after a crash
// in between finishes the clean-up.
var rejectScript = rueidis.NewLuaScript(findSignupLua + `
local raw = find(KEYS[1], ARGV[1])
local removed = 0
if raw then removed = redis.call('LREM', KEYS[1], 1, raw) end
local token = redis.call('GET', KEYS[2])
if token then return {removed, token} end
return {removed}
`)

// deleteIfScript deletes KEYS[1] only while it still holds ARGV[1], so that
// a record rewritten meanwhile (revoked, or someone else's) is kept.
// Returns 1 when deleted.
var deleteIfScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
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

func handlePending(store *adminStore) fiber.Handler {
	return func(c fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		body, err := store.pending(ctx)
		if err != nil {
			return err
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(body)
	}
}

// handleApprove answers PUT /api/approve: {"email","limit","token"?}, or
// the legacy {"UserEmail","MonthlyLimit","Token"}.
func handleApprove(log *slog.Logger, store *adminStore, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		var body struct {
			Email        json.RawMessage `json:"email"`
			UserEmail    json.RawMessage `json:"UserEmail"`
			Limit        json.RawMessage `json:"limit"`
			MonthlyLimit json.RawMessage `json:"MonthlyLimit"`
			Token        json.RawMessage `json:"token"`
		}
		if err := readAdminJSON(c, &body); err != nil {
			return err
		}
		var a approval
		var err error
		if a.Email, err = requiredString(either(body.Email, body.UserEmail), msgEmailType, msgApproveEmail); err != nil {
			return err
		}
		if a.Email = strings.TrimSpace(a.Email); a.Email == "" {
			return badRequest(msgApproveEmail)
		}
		// The key is emailed to this address: one that cannot be mailed
		// (a legacy signup's "email" with a line break, no '@'…) cannot be
		// approved, only rejected.
		if _, err := parseEmail(a.Email); err != nil {
			return err
		}
		limit := either(body.Limit, body.MonthlyLimit)
		if limit == nil {
			return badRequest(msgLimitMissing)
		}
		if err := json.Unmarshal(limit, &a.Limit); err != nil || a.Limit < 1 {
			return badRequest(msgLimit)
		}
		if body.Token != nil && string(body.Token) != "null" {
			if a.Token, err = requiredString(body.Token, msgTokenType, msgToken); err != nil {
				return err
			}
			if !wellFormedToken(a.Token) {
				return badRequest(msgToken)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		token, err := store.approve(ctx, a)
		if err != nil {
			return err
		}
		m.approvals.Inc()
		log.Info("approved", "admin", adminSub(c), "token", logging.Token(token), "limit", a.Limit)
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		out, _ := json.Marshal(struct {
			Message string `json:"message"`
			Token   string `json:"token"`
		}{"OK", token})
		return c.Send(out)
	}
}

// handleRevoke answers PUT /api/revoke {"token"}.
func handleRevoke(log *slog.Logger, store *adminStore, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		var body struct {
			Token json.RawMessage `json:"token"`
		}
		if err := readAdminJSON(c, &body); err != nil {
			return err
		}
		token, err := requiredString(body.Token, msgTokenType, msgTokenMissing)
		if err != nil {
			return err
		}
		if token == "" {
			return badRequest(msgTokenMissing)
		}
		if !wellFormedToken(token) {
			return errUserNotExists // no such key can exist
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		if err := store.revoke(ctx, token); err != nil {
			return err
		}
		m.revokes.Inc()
		log.Info("revoked", "admin", adminSub(c), "token", logging.Token(token))
		return sendMessage(c, "OK")
	}
}

// handleReject answers PUT /api/reject {"email"}: the signup leaves the
// list and no email is sent.
func handleReject(log *slog.Logger, store *adminStore, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		var body struct {
			Email json.RawMessage `json:"email"`
		}
		if err := readAdminJSON(c, &body); err != nil {
			return err
		}
		email, err := requiredString(body.Email, msgEmailType, msgApproveEmail)
		if err != nil {
			return err
		}
		if email = strings.TrimSpace(email); email == "" {
			return badRequest(msgApproveEmail)
		}
		if len(email) > maxEmailBytes {
			return badRequest(msgEmailLength)
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		removed, discarded, err := store.reject(ctx, email)
		if err != nil {
			return err
		}
		if discarded != "" {
			log.Info("deleted the never-delivered key of an unfinished approval", "admin", adminSub(c),
				"token", logging.Token(discarded))
		}
		if !removed {
			return errEmailNotListed
		}
		m.rejects.Inc()
		log.Info("rejected", "admin", adminSub(c))
		return sendMessage(c, "OK")
	}
}

// readAdminJSON reads an admin request body: JSON only.
func readAdminJSON(c fiber.Ctx, v any) error {
	if err := rejectEncoding(c); err != nil {
		return err
	}
	if mediaType(c) != fiber.MIMEApplicationJSON {
		return errContentType
	}
	return decodeObject(c.Request().Body(), v)
}

// either returns a unless it is absent, else b.
func either(a, b json.RawMessage) json.RawMessage {
	if a != nil {
		return a
	}
	return b
}

// requiredString reads a JSON string that must be present.
func requiredString(raw json.RawMessage, typeMsg, missingMsg string) (string, error) {
	if raw == nil || string(raw) == "null" {
		return "", badRequest(missingMsg)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badRequest(typeMsg)
	}
	return s, nil
}

// wellFormedToken reports whether token may name an API key: 1–256 bytes of
// 0x21–0x7E, not one of the data model's own keys (as auth checks).
func wellFormedToken(token string) bool {
	if token == "" || len(token) > maxTokenLen {
		return false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return !wire.IsOwnKey(token)
}

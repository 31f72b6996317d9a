package main

// The answers the service's tests expect, written out here rather than
// taken from the code, so that a changed message fails a test.

// Validation messages of a signup (SPEC §3): each names its field.
const (
	msgName         = "name must be 1 to 100 characters"
	msgNameString   = "name must be a string"
	msgNameControl  = "name must not contain control characters"
	msgNameUTF8     = "name must be valid UTF-8"
	msgEmail        = "email must be a single email address without a display name"
	msgEmailString  = "email must be a string"
	msgEmailLength  = "email must be at most 254 bytes"
	msgLookalike    = "email must be written in one script, without invisible or look-alike characters"
	msgBuilding     = "building must be at most 1000 characters"
	msgBuildingType = "building must be a string"
	msgBuildingUTF8 = "building must be valid UTF-8"
	msgBuildingCtl  = "building must not contain control characters"
	msgBuildingSize = "building is too long: a signup is stored in at most 1024 bytes"
	msgCallsMissing = "calls is required"
	msgCalls        = "calls must be an integer from 0 to 1000000000"
)

// Validation messages of the admin API.
const (
	msgApproveEmail = "email is required"
	msgEmailType    = "email must be a string"
	msgLimit        = "limit must be a positive integer"
	msgLimitMissing = "limit is required"
	msgToken        = "token must be 1 to 256 printable ASCII characters and not a reserved key"
	msgTokenMissing = "token is required"
	msgTokenType    = "token must be a string"
	msgRate         = "rate must be a rate such as 10/s or 600/m;burst=100 (count 1 to 1000000), or off"
	msgExpiresBoth  = "give expires_in or expires_at, not both"
	msgExpiresIn    = "expires_in must be a whole number of seconds from 1 to 315360000"
	msgExpiresAt    = "expires_at must be an RFC 3339 time such as 2027-01-31T00:00:00Z"
	msgExpiresPast  = "expires_at must be in the future, at most 10 years ahead"
	msgGrace        = "grace must be a whole number of seconds from 0 to 31536000"
)

// Bounds of a signup (SPEC §3, and the 1 KiB a stored signup may take).
const (
	maxNameRunes     = 100
	maxBuildingRunes = 1000
	maxCalls         = 1_000_000_000
	maxStoredSignup  = 1024
)

// rateLimitPrefix starts every rate-limit key.
const rateLimitPrefix = "pesto:ratelimit:"

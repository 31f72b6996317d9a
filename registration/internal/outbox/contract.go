package outbox

import "pesto/shared/wire"

// keyEmail is one queued email that gives a user their API key. Its stream
// entry's format is shared/wire's (KeyEmail.Fields), which auth's quota
// warnings share the stream with (wire.QuotaWarning).
type keyEmail = wire.KeyEmail

// entryFields returns the stream fields of a parsed entry, as its writer
// wrote them.
func entryFields(e wire.OutboxEntry) []string {
	if e.Warning != nil {
		return e.Warning.Fields()
	}
	return e.Key.Fields()
}

package main

import (
	"strconv"
)

// keyEmail is one queued email that gives a user their API key.
type keyEmail struct {
	To    string // address, as on the signup
	Name  string // the user's name, as on the signup
	Token string // the API key
	Limit int64  // its monthly limit
}

// fields returns the stream entry's field/value pairs, in this order:
// to, name, token, limit. Approve's script XADDs exactly these.
func (k keyEmail) fields() []string {
	return []string{"to", k.To, "name", k.Name, "token", k.Token, "limit", strconv.FormatInt(k.Limit, 10)}
}

// parseKeyEmail reads the fields of a stream entry written by fields (extra
// fields are ignored). ok is false when one of the four is missing or the
// limit is not an integer.
func parseKeyEmail(values map[string]string) (k keyEmail, ok bool) {
	var err error
	k.To, k.Name, k.Token = values["to"], values["name"], values["token"]
	k.Limit, err = strconv.ParseInt(values["limit"], 10, 64)
	return k, err == nil && k.To != "" && k.Token != ""
}

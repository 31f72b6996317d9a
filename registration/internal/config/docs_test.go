package config

import (
	"testing"

	"pesto/shared/doccheck"
)

// The README's configuration tables ("Both services" and "registration")
// list exactly the variables registration reads, all of them here (Load);
// the email section's table lists some of them.
func TestREADMEListsTheVariablesRegistrationReads(t *testing.T) {
	var read []string
	if _, err := Load(func(name string) (string, bool) {
		read = append(read, name)
		return "", false
	}); err != nil {
		t.Fatal(err)
	}
	tables := doccheck.ConfigTables(t)
	listed := append(tables["Both services"], tables["registration"]...)
	extra, missing := doccheck.Diff(read, listed)
	if len(extra) > 0 || len(missing) > 0 {
		t.Errorf("registration reads, and the README's Configuration does not list: %v\nlisted, and registration does not read: %v", extra, missing)
	}
	if _, missing := doccheck.Diff(read, doccheck.Variables(t, "#### Configuration")); len(missing) > 0 {
		t.Errorf("the README's email configuration lists variables registration does not read: %v", missing)
	}
}

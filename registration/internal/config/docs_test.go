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
	load := func(lookup func(string) (string, bool)) error {
		_, err := Load(func(name string) (string, bool) {
			read = append(read, name)
			return lookup(name)
		})
		return err
	}
	doccheck.CheckVariables(t, "registration", load, "Both services", "registration")
	email := doccheck.Variables(t, "#### Configuration")
	if _, missing := doccheck.Diff(read, email); len(email) == 0 || len(missing) > 0 {
		t.Errorf("the README's email configuration lists %v; registration does not read %v", email, missing)
	}
}

package main

import (
	"testing"

	"pesto/shared/doccheck"
)

// The README's configuration tables ("Both services" and "auth") list
// exactly the variables auth reads: its configuration reads them all
// (TestOnlyConfigurationReadsTheEnvironment, in deploy, holds the rest of
// the code to that).
func TestREADMEListsTheVariablesAuthReads(t *testing.T) {
	doccheck.CheckVariables(t, "auth", func(lookup func(string) (string, bool)) error {
		_, err := loadConfig(lookup)
		return err
	}, "Both services", "auth")
}

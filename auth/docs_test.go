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
	var read []string
	if _, err := loadConfig(func(name string) (string, bool) {
		read = append(read, name)
		return "", false
	}); err != nil {
		t.Fatal(err)
	}
	tables := doccheck.ConfigTables(t)
	listed := append(tables["Both services"], tables["auth"]...)
	extra, missing := doccheck.Diff(read, listed)
	if len(extra) > 0 || len(missing) > 0 {
		t.Errorf("auth reads, and the README's Configuration does not list: %v\nlisted, and auth does not read: %v", extra, missing)
	}
}

package main

import (
	"fmt"

	"pesto/shared/cli"
)

// The usage errors of the command line (exit code 2, with the usage line).

// errUsage: no such subcommand.
var errUsage = fmt.Errorf("%w: registration [healthcheck|version|admin-token|migrate-keys]", cli.ErrUsage)

// errAdminTokenUsage: admin-token's flags are wrong.
var errAdminTokenUsage = fmt.Errorf("%w: registration admin-token --sub NAME [--ttl 1h] [--key ed25519-private.pem]", errUsage)

// errMigrateUsage: migrate-keys' flags are wrong.
var errMigrateUsage = fmt.Errorf("%w: registration migrate-keys [--apply] [--batch 500]", errUsage)

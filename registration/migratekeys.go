package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/redis/rueidis"

	"pesto/registration/internal/config"
	"pesto/registration/internal/migrate"
	shared "pesto/shared/config"
	"pesto/shared/wire"
)

// migrateKeys is the migrate-keys subcommand: it moves every plaintext key
// record (a string under a well-formed token name whose value is a token
// record) to its hashed form, wire.HashedKey, in batches of SCAN ... TYPE
// string, on every master of a Redis Cluster. Without --apply it writes
// nothing and counts what it would move. With --apply, KEY_STORAGE must
// be hashed (so that registration writes no new plaintext key meanwhile).
// Each move is apikey.Move: safe while auth serves calls on the same keys.
// It prints a progress line per batch and a summary (migrate.Keys);
// stopped, it is started again (what it moved is no longer plaintext).
func migrateKeys(ctx context.Context, args []string, cfg config.Config, cfgErr error, stdout io.Writer) error {
	fs := flag.NewFlagSet("migrate-keys", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	apply := fs.Bool("apply", false, "move the records (without it: only count them)")
	batch := fs.Int("batch", 500, "keys per SCAN call (COUNT)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *batch < 1 || *batch > 100_000 {
		return errMigrateUsage
	}
	if cfgErr != nil {
		return cfgErr
	}
	if *apply && cfg.KeyStorage != wire.StorageHashed {
		return &shared.Error{Var: "KEY_STORAGE", Msg: "migrate-keys --apply needs KEY_STORAGE=hashed (switch the services first: docs/migration.md)"}
	}
	opt := cfg.RedisOptions()
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer c.Close()

	return migrate.Keys(ctx, c, *batch, *apply, stdout)
}

package main

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"pesto/registration/internal/adminjwt"
	"pesto/registration/internal/config"
	shared "pesto/shared/config"
)

// adminToken is the admin-token subcommand: it prints an admin JWT (SPEC
// §4) for sub, valid for ttl, signed with ADMIN_JWT_SECRET (HS256) or, with
// --key, the Ed25519 private key of that PEM file (EdDSA).
func adminToken(args []string, cfg config.Config, cfgErr error, stdout io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("admin-token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sub := fs.String("sub", "", "the admin's name, logged with every action")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	keyPath := fs.String("key", "", "Ed25519 private key (PKCS #8 PEM) to sign with instead of ADMIN_JWT_SECRET")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || strings.TrimSpace(*sub) == "" || *ttl <= 0 {
		return errAdminTokenUsage
	}
	var method jwt.SigningMethod
	var key any
	if *keyPath != "" {
		pem, err := os.ReadFile(*keyPath)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		k, err := jwt.ParseEdPrivateKeyFromPEM(pem)
		priv, ok := k.(ed25519.PrivateKey)
		if err != nil || !ok {
			return fmt.Errorf("%w: %s is not an Ed25519 private key in PKCS #8 PEM", errUsage, *keyPath)
		}
		method, key = jwt.SigningMethodEdDSA, priv
	} else {
		var ce *shared.Error
		if errors.As(cfgErr, &ce) && ce.Var == "ADMIN_JWT_SECRET" {
			return cfgErr
		}
		if len(cfg.AdminSecret) == 0 {
			return &shared.Error{Var: "ADMIN_JWT_SECRET", Msg: "not set (or pass --key ed25519-private.pem)"}
		}
		method, key = jwt.SigningMethodHS256, cfg.AdminSecret
	}
	claims := jwt.RegisteredClaims{
		Audience:  jwt.ClaimStrings{adminjwt.Audience},
		Subject:   strings.TrimSpace(*sub),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(*ttl)),
	}
	signed, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, signed)
	return err
}

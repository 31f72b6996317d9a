package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"pesto/shared/cli"
	"pesto/shared/config"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// adminTokenCmd runs `registration admin-token args...` with env.
func adminTokenCmd(env map[string]string, args ...string) (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"admin-token"}, args...),
		servicetest.Env(env), &out, nil)
	return strings.TrimSuffix(out.String(), "\n"), err
}

// The printed token is accepted by a service configured with the matching key.
func TestAdminTokenSubcommand(t *testing.T) {
	rs := redistest.Start(t)
	_, privPath, pubPEM, _ := ed25519PEM(t, t.TempDir())
	hsBase, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	edBase, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "ADMIN_JWT_SECRET": "", "ADMIN_JWT_PUBLIC_KEY": pubPEM})
	bothBase, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "ADMIN_JWT_PUBLIC_KEY": pubPEM})

	hs, err := adminTokenCmd(map[string]string{"ADMIN_JWT_SECRET": testAdminSecret}, "--sub", "ops-alice")
	if err != nil {
		t.Fatal(err)
	}
	ed, err := adminTokenCmd(nil, "--sub", "ops-bob", "--ttl", "5m", "--key", privPath)
	if err != nil {
		t.Fatal(err)
	}
	send(t, "GET", hsBase+"/api/pending", "", "Authorization", "Bearer "+hs).want(t, 200, `[]`)
	send(t, "GET", edBase+"/api/pending", "", "Authorization", "Bearer "+ed).want(t, 200, `[]`)
	send(t, "GET", hsBase+"/api/pending", "", "Authorization", "Bearer "+ed).want(t, 401, unauthorized)
	send(t, "GET", edBase+"/api/pending", "", "Authorization", "Bearer "+hs).want(t, 401, unauthorized)
	// With both keys configured (while moving from one to the other),
	// each token is checked against the key of its own algorithm.
	send(t, "GET", bothBase+"/api/pending", "", "Authorization", "Bearer "+hs).want(t, 200, `[]`)
	send(t, "GET", bothBase+"/api/pending", "", "Authorization", "Bearer "+ed).want(t, 200, `[]`)

	// The claims: aud pesto-admin, sub, iat, exp = iat + ttl.
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(ed, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "ops-bob" || len(claims.Audience) != 1 || claims.Audience[0] != "pesto-admin" ||
		claims.IssuedAt == nil || claims.ExpiresAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) != 5*time.Minute ||
		time.Since(claims.IssuedAt.Time) > time.Minute {
		t.Fatalf("claims %+v", claims)
	}

	// The sub names the admin in the log of each action.
	send(t, "POST", hsBase+"/api/register", `{"name":"X","email":"x@example.com","calls":1}`).want(t, 201, created)
	send(t, "PUT", hsBase+"/api/reject", `{"email":"x@example.com"}`, "Authorization", "Bearer "+hs).
		want(t, 200, `{"message":"OK"}`)
	if !regexp.MustCompile(`"msg":"rejected".*"admin":"ops-alice"`).MatchString(logs.String()) {
		t.Fatalf("reject not logged with the sub:\n%s", logs)
	}
}

func TestAdminTokenSubcommandErrors(t *testing.T) {
	_, privPath, _, pubPath := ed25519PEM(t, t.TempDir())
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantVar string // a *config.Error naming this, else a usage error
	}{
		{"no sub", map[string]string{"ADMIN_JWT_SECRET": testAdminSecret}, nil, ""},
		{"blank sub", map[string]string{"ADMIN_JWT_SECRET": testAdminSecret}, []string{"--sub", " "}, ""},
		{"bad ttl", map[string]string{"ADMIN_JWT_SECRET": testAdminSecret}, []string{"--sub", "a", "--ttl", "soon"}, ""},
		{"negative ttl", map[string]string{"ADMIN_JWT_SECRET": testAdminSecret}, []string{"--sub", "a", "--ttl", "-1h"}, ""},
		{"extra argument", map[string]string{"ADMIN_JWT_SECRET": testAdminSecret}, []string{"--sub", "a", "x"}, ""},
		{"unknown flag", map[string]string{"ADMIN_JWT_SECRET": testAdminSecret}, []string{"--sub", "a", "--aud", "x"}, ""},
		{"missing key file", nil, []string{"--sub", "a", "--key", "/no/such.pem"}, ""},
		{"public key as key", nil, []string{"--sub", "a", "--key", pubPath}, ""},
		{"no secret", nil, []string{"--sub", "a"}, "ADMIN_JWT_SECRET"},
		{"short secret", map[string]string{"ADMIN_JWT_SECRET": "short"}, []string{"--sub", "a"}, "ADMIN_JWT_SECRET"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := adminTokenCmd(c.env, c.args...)
			if out != "" {
				t.Fatalf("printed %q", out)
			}
			var ce *config.Error
			if c.wantVar != "" {
				if !errors.As(err, &ce) || ce.Var != c.wantVar {
					t.Fatalf("got %v, want a config error naming %s", err, c.wantVar)
				}
			} else if !errors.Is(err, errUsage) {
				t.Fatalf("got %v, want a usage error", err)
			}
			if code := cli.ExitCode("registration", err, new(bytes.Buffer)); code != 2 {
				t.Fatalf("exit %d, want 2", code)
			}
		})
	}
	if _, err := adminTokenCmd(nil, "--sub", "a", "--key", privPath); err != nil {
		t.Fatalf("with --key no secret is needed: %v", err)
	}
}

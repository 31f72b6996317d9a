package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"pesto/shared/redistest"
)

const unauthorized = `{"message":"Unauthorized"}`

// sign returns a JWT of claims signed with method and key.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ed25519PEM writes a new Ed25519 key pair as PEM files in dir.
func ed25519PEM(t testing.TB, dir string) (priv ed25519.PrivateKey, privPath, pubPEM, pubPath string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	privPath, pubPath = filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin.pub.pem")
	pubPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}))
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, []byte(pubPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, privPath, pubPEM, pubPath
}

func TestAdminJWT(t *testing.T) {
	rs := redistest.Start(t)
	priv, _, pubPEM, pubPath := ed25519PEM(t, t.TempDir())
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	hsBase, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	edBase, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "ADMIN_JWT_SECRET": "", "ADMIN_JWT_PUBLIC_KEY": pubPEM})
	edFileBase, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "ADMIN_JWT_SECRET": "", "ADMIN_JWT_PUBLIC_KEY": pubPath})
	offBase, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "ADMIN_JWT_SECRET": ""})

	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"aud": []string{"pesto-admin"}, "sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	secret := []byte(testAdminSecret)
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))

	cases := []struct {
		name   string
		base   string
		auth   string // Authorization header; "" sends none
		status int
		body   string
	}{
		{"HS valid", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(nil)), 200, `[]`},
		{"HS bearer lower case", hsBase, "bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(nil)), 200, `[]`},
		{"HS aud as string", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["aud"] = "pesto-admin" })), 200, `[]`},
		{"HS aud among others", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["aud"] = []string{"x", "pesto-admin"} })), 200, `[]`},
		{"HS within leeway", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-20 * time.Second).Unix() })), 200, `[]`},
		{"no header", hsBase, "", 401, unauthorized},
		{"not bearer", hsBase, "Basic YWRtaW46YWRtaW4=", 401, unauthorized},
		{"bearer nothing", hsBase, "Bearer ", 401, unauthorized},
		{"garbage", hsBase, "Bearer abc.def.ghi", 401, unauthorized},
		{"alg none", hsBase, "Bearer " + none, 401, unauthorized},
		{"HS384", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS384, secret, claims(nil)), 401, unauthorized},
		{"EdDSA against HS secret", hsBase, "Bearer " + sign(t, jwt.SigningMethodEdDSA, priv, claims(nil)), 401, unauthorized},
		{"wrong secret", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(testAdminSecret+"x"), claims(nil)), 401, unauthorized},
		{"expired beyond leeway", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-40 * time.Second).Unix() })), 401, unauthorized},
		{"no exp", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { delete(c, "exp") })), 401, unauthorized},
		{"wrong aud", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["aud"] = []string{"pesto"} })), 401, unauthorized},
		{"no aud", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { delete(c, "aud") })), 401, unauthorized},
		{"no sub", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { delete(c, "sub") })), 401, unauthorized},
		{"blank sub", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["sub"] = "  " })), 401, unauthorized},
		{"not yet valid", hsBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), 401, unauthorized},
		{"Ed valid", edBase, "Bearer " + sign(t, jwt.SigningMethodEdDSA, priv, claims(nil)), 200, `[]`},
		{"Ed valid, key from file", edFileBase, "Bearer " + sign(t, jwt.SigningMethodEdDSA, priv, claims(nil)), 200, `[]`},
		{"HS256 against Ed key", edBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(nil)), 401, unauthorized},
		{"Ed wrong key", edBase, "Bearer " + sign(t, jwt.SigningMethodEdDSA, otherPriv, claims(nil)), 401, unauthorized},
		{"Ed alg none", edBase, "Bearer " + none, 401, unauthorized},
		{"neither configured", offBase, "Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(nil)), 503, `{"message":"Admin API is not configured"}`},
		{"neither configured, no header", offBase, "", 503, `{"message":"Admin API is not configured"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h []string
			if c.auth != "" {
				h = []string{"Authorization", c.auth}
			}
			send(t, "GET", c.base+"/api/pending", "", h...).want(t, c.status, c.body)
		})
	}

	// Every admin route is guarded, and public routes work without a key.
	for _, route := range []string{"/api/approve", "/api/revoke", "/api/reject"} {
		send(t, "PUT", hsBase+route, `{}`).want(t, 401, unauthorized)
		send(t, "PUT", offBase+route, `{}`).want(t, 503, `{"message":"Admin API is not configured"}`)
	}
	send(t, "POST", offBase+"/api/register", `{"name":"a","email":"a@b.co","calls":1}`).want(t, http.StatusCreated, created)
}

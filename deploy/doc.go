// Package deploy holds the tests of the repository as it ships: the
// deployment files (compose.yaml, the Dockerfiles, the nginx and Caddy
// recipes run against real proxies), the documents (docs_test.go: the
// tests, files and routes README.md and docs/ name exist; only the
// configuration reads the environment), and the services beside the old
// ones they replace (sidebyside_test.go, against models of the old auth and
// registration written line by line from their sources: oldauth_test.go,
// oldregistration_test.go).
package deploy

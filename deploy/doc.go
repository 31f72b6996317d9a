// Package deploy holds the tests of the repository as it ships: the
// deployment files (compose.yaml, the Dockerfiles, the nginx and Caddy
// recipes run against real proxies) and the documents (docs_test.go: the
// tests, files and routes README.md and docs/ name exist; only the
// configuration reads the environment).
package deploy

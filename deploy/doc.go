// Package deploy holds the tests of the deployment files: compose.yaml,
// the Dockerfiles, and the nginx and Caddy recipes run against real proxies.
package deploy

# The commands the README shows. CI runs `make test` through .ci/run.
GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
MODULES   := ./auth/... ./registration/... ./shared/... ./demoapi/... ./deploy/... ./bench/... ./docker/traefik/admission/...
TESTFLAGS ?= -race -count=1 -p 1 -timeout 15m

.PHONY: build test test-arm64 lint run bench fuzz e2e clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o bin/auth ./auth
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o bin/registration ./registration

## test: lint, then every test of every module against real redis-server,
## SMTP, proxies (nginx, Caddy, Traefik) and browser (see .ci/run for what
## they need installed; Traefik: deploy/e2e/tools.sh).
## The service suites run twice: against a standalone Redis and against a
## three-master Redis Cluster (PESTO_REDIS=cluster, see shared/redistest).
test: lint
	$(GO) test $(TESTFLAGS) $(MODULES)
	PESTO_REDIS=cluster $(GO) test $(TESTFLAGS) ./auth/... ./registration/...

## test-arm64: the services built for linux/arm64 on this (amd64) machine
## and run under qemu-user (qemu-aarch64-static, Debian's qemu-user-static;
## .ci/run installs it): the tests of the wire format, auth and registration,
## cross-compiled and run through the emulator against the same real
## redis-server, SMTP server and browser as make test (no -race: it needs
## cgo), then the arm64 auth binary that docker/auth.Dockerfile's build
## stage makes, answering its health check and a real key
## (deploy/emulation_test.go). The emulator starts the test binaries; their
## children run it too (PESTO_TEST_EMULATOR); tools the tests build
## themselves are this machine's (env -u GOARCH). One test is left to
## make test: TestMoveUnderRacingReplicas races three auth processes, each
## emulated, against auth's 1 s Redis deadline, which emulation (code
## translated on first use, several times slower) misses in about one run
## of four.
ARM64_PACKAGES ?= ./shared/wire/... ./auth/... ./registration/...
ARM64_SKIP     ?= ^TestMoveUnderRacingReplicas$$
QEMU_ARM64     ?= qemu-aarch64-static
test-arm64:
	GOARCH=arm64 CGO_ENABLED=0 PESTO_TEST_EMULATOR=$(QEMU_ARM64) \
	  $(GO) test -count=1 -p 1 -timeout 15m -skip '$(ARM64_SKIP)' -exec 'env -u GOARCH $(QEMU_ARM64)' $(ARM64_PACKAGES)
	$(GO) test -count=1 -tags emulation -run '^TestArm64' ./deploy/

## lint: gofmt, go vet and staticcheck of every module, then actionlint
## (with shellcheck) of .github/workflows and the checks of the release
## workflow and Dependabot's configuration (deploy/workflow_test.go).
lint:
	@out=$$(gofmt -l auth registration shared demoapi deploy bench docker/traefik/admission); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(MODULES)
	$(GO) vet -tags e2e ./deploy/e2e/...
	$(GO) vet -tags emulation ./deploy/
	staticcheck $(MODULES)
	staticcheck -tags e2e ./deploy/e2e/...
	staticcheck -tags emulation ./deploy/
	$(GO) test -count=1 -run '^(TestWorkflowsLint|TestReleaseWorkflow|TestDependabot)$$' ./deploy/

## e2e: the compose stack on a real Docker engine (Debian's docker.io,
## installed and started if need be; root), checked through the gateway.
## Images no registry gives here are made locally first; Traefik and the
## Compose plugin are built once into /var/cache/pesto-e2e. See
## deploy/e2e/run.sh and the README (Deploy).
e2e:
	deploy/e2e/run.sh

## run: both services on this machine against the local redis-server
## (auth on :3000, registration on :3001). The container stack: docker compose up.
run: build
	@trap 'kill 0' INT TERM EXIT; \
	PORT=3000 ./bin/auth & \
	PORT=3001 ./bin/registration & \
	wait

## bench: builds, starts its own redis-server, loads both services with wrk
## next to a do-nothing fiber handler, and writes docs/performance.md.
bench: build
	$(GO) run ./bench/harness

## fuzz: every fuzz target of every package, $(FUZZTIME) each. (make test
## runs their seed corpora; this searches for new failures, which go test
## writes to the package's testdata/fuzz/ to be committed with the fix.)
FUZZTIME ?= 60s
fuzz:
	@set -e; for pkg in $$($(GO) list ./auth/... ./registration/... ./shared/...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin

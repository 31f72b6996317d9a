#!/usr/bin/env bash
# Builds, once, the tools the end-to-end test and deploy/proxy_test.go need
# and no package provides here, into a cache kept between runs (outside the
# repository): Traefik and the Docker Compose v2 plugin, each from its Go
# module at the version pinned below. A cached binary is reused as is.
#
#   deploy/e2e/tools.sh            # fills $PESTO_E2E_CACHE (default /var/cache/pesto-e2e)
#
# Afterwards: $PESTO_E2E_CACHE/bin/traefik and
# $PESTO_E2E_CACHE/docker-config/cli-plugins/docker-compose.
set -euo pipefail

# The gateway's release line is compose.yaml's image tag (traefik:v3.6);
# this is the patch release of that line built here.
TRAEFIK_VERSION=v3.6.12
COMPOSE_VERSION=v2.40.3

CACHE=${PESTO_E2E_CACHE:-/var/cache/pesto-e2e}
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off

log() { printf '== %s\n' "$*" >&2; }

# build_module MODULE VERSION PKG OUT [PREPARE]: go mod download MODULE@VERSION,
# build PKG inside a writable copy of it (its go.mod governs, exclude
# directives and all) into OUT.
build_module() {
	local module=$1 version=$2 pkg=$3 out=$4 prepare=${5:-true}
	if [ -x "$out" ]; then
		log "cached: $out"
		return
	fi
	log "building $module@$version (cache: $out)"
	local work dir
	work=$(mktemp -d)
	mkdir -p "$(dirname "$out")"
	dir=$(cd "$work" && go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] || { echo "go mod download $module@$version: no module directory" >&2; return 1; }
	cp -r "$dir" "$work/src"
	chmod -R u+w "$work/src"
	(cd "$work/src" && $prepare && nice -n 10 go build -trimpath -ldflags="-s -w $LDFLAGS_EXTRA" -o "$out.tmp" "$pkg")
	mv "$out.tmp" "$out"
	chmod -R u+w "$work"
	rm -rf "$work"
}

# Traefik embeds its web UI, which the module does not ship.
traefik_prepare() { mkdir -p webui/static && echo '<!doctype html>' > webui/static/index.html; }

mkdir -p "$CACHE/bin" "$CACHE/docker-config/cli-plugins"

LDFLAGS_EXTRA="-X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
	build_module github.com/traefik/traefik/v3 "$TRAEFIK_VERSION" ./cmd/traefik \
	"$CACHE/traefik-$TRAEFIK_VERSION/traefik" traefik_prepare
ln -sfn "../traefik-$TRAEFIK_VERSION/traefik" "$CACHE/bin/traefik"

LDFLAGS_EXTRA="-X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
	build_module github.com/docker/compose/v2 "$COMPOSE_VERSION" ./cmd \
	"$CACHE/compose-$COMPOSE_VERSION/docker-compose"
ln -sfn "../../compose-$COMPOSE_VERSION/docker-compose" "$CACHE/docker-config/cli-plugins/docker-compose"

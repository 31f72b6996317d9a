#!/usr/bin/env bash
# make e2e: the compose stack on a real Docker engine, checked from outside
# through the gateway by deploy/e2e/e2e_test.go.
#
# On a machine with only Go (CI: as root, after make test):
#   1. installs Debian's docker.io (Engine 20.10) and starts dockerd if none
#      answers (and stops it again at the end);
#   2. builds Traefik and the Compose v2 plugin from their Go modules, once
#      (deploy/e2e/tools.sh; cached in $PESTO_E2E_CACHE, default
#      /var/cache/pesto-e2e);
#   3. makes, under the names compose.yaml and the Dockerfiles use, the
#      images no registry gives here: the Go build stage from this machine's
#      Go toolchain, Redis from Debian's redis-server, Traefik from the
#      binary of step 2, the mail catcher from the stand-in in
#      deploy/e2e/standin (a machine that reaches Docker Hub pulls the real
#      ones instead: nothing of this is needed there);
#   4. builds auth, registration and the demo API from docker/*.Dockerfile,
#      as they are, in a clean copy of the repository (tracked and new
#      files, nothing ignored), under the names compose.yaml pulls them by
#      (ghcr.io/…:e2e: present, so compose pulls nothing); then each for
#      linux/arm64 too, cross-compiled by the same build stage, and checks
#      that the arm64 binary runs (under qemu-user) and what each weighs;
#   5. runs the test, which brings the stack up there with its own .env,
#      checks it and takes it down.
# One run at a time on an engine: the stack's project name (pesto-e2e, or
# PESTO_E2E_PROJECT) and its network's fixed subnet are the same for every
# run, and no other stack of compose.yaml may be up meanwhile (its subnet).
# Anything that cannot be done fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${PESTO_E2E_CACHE:-/var/cache/pesto-e2e}
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

log() { printf '== e2e: %s\n' "$*" >&2; }
fail() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (it installs docker.io and runs dockerd)"

# ---- 1. the engine -------------------------------------------------------
# Debian's client: its BuildKit is built in (the newer client some machines
# have in /usr/local/bin needs the buildx plugin).
DOCKER=/usr/bin/docker
if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null || [ ! -x /bin/busybox ] || ! command -v redis-server >/dev/null ||
	! command -v wrk >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
	log "installing docker.io, busybox-static, redis-server, wrk, qemu-user-static"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends docker.io busybox-static redis-server wrk ca-certificates qemu-user-static >/dev/null
	service redis-server stop >/dev/null 2>&1 || true
fi
mkdir -p "$CACHE"
WORK=$(mktemp -d)
DOCKERD=
cleanup() {
	rm -rf "$WORK"
	if [ -n "$DOCKERD" ]; then
		kill "$DOCKERD" 2>/dev/null || true
		wait "$DOCKERD" 2>/dev/null || true
	fi
}
trap cleanup EXIT
if ! "$DOCKER" info >/dev/null 2>&1; then
	log "starting dockerd (log: $CACHE/dockerd.log)"
	dockerd >"$CACHE/dockerd.log" 2>&1 &
	DOCKERD=$!
	for _ in $(seq 1 60); do
		"$DOCKER" info >/dev/null 2>&1 && break
		kill -0 "$DOCKERD" 2>/dev/null || { tail -20 "$CACHE/dockerd.log" >&2; fail "dockerd exited"; }
		sleep 0.5
	done
	"$DOCKER" info >/dev/null || { tail -20 "$CACHE/dockerd.log" >&2; fail "dockerd does not answer"; }
fi
log "engine $("$DOCKER" version --format '{{.Server.Version}}')"
project=${PESTO_E2E_PROJECT:-pesto-e2e}
running=$("$DOCKER" ps -a -q --filter label=com.docker.compose.project="$project")
[ -z "$running" ] || fail "containers of project $project exist: another make e2e runs on this engine, or one was killed (then: docker compose -p $project down -v)"

# ---- 2. tools ------------------------------------------------------------
"$ROOT/deploy/e2e/tools.sh"
export DOCKER_CONFIG=$CACHE/docker-config
"$DOCKER" compose version >/dev/null || fail "docker compose does not run"
log "$("$DOCKER" compose version)"

# ---- the clean copy ------------------------------------------------------
COPY=$WORK/repo
mkdir -p "$COPY"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
	[ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -C "$COPY" -xf -
export PESTO_VERSION=e2e

# ---- 3. the images no registry gives here --------------------------------
# import NAME ROOTFS_DIR SOURCE [--change ...]: the directory as an image,
# labelled with what it was made from; an image of that name and label is
# kept as is.
made_from() { "$DOCKER" image inspect --format '{{index .Config.Labels "pesto.e2e.source"}}' "$1" 2>/dev/null || true; }
import() {
	local name=$1 dir=$2 source=$3
	shift 3
	log "image $name ($source)"
	tar -C "$dir" -cf - . | "$DOCKER" import --change "LABEL pesto.e2e.source=\"$source\"" "$@" - "$name" >/dev/null
}
# rootfs DIR: a directory with busybox as /bin/sh and its applets.
rootfs() {
	mkdir -p "$1/bin" "$1/tmp" "$1/etc"
	chmod 1777 "$1/tmp"
	cp /bin/busybox "$1/bin/busybox"
	for applet in $(/bin/busybox --list); do
		[ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
	done
}
# copy_dynamic DIR BIN...: the binaries and the shared libraries they load.
copy_dynamic() {
	local dir=$1 bin lib
	shift
	for bin in "$@"; do
		mkdir -p "$dir$(dirname "$bin")"
		cp -L "$bin" "$dir$bin"
		for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
			mkdir -p "$dir$(dirname "$lib")"
			cp -L "$lib" "$dir$lib"
		done
	done
}
# static_image NAME PKG BIN: a Go command of deploy/e2e/standin alone in an image.
static_image() {
	local name=$1 pkg=$2 bin=$3 dir
	dir=$WORK/$bin
	mkdir -p "$dir"
	(cd "$ROOT/deploy" && CGO_ENABLED=0 go build -trimpath -o "$dir/$bin" "$pkg")
	import "$name" "$dir" "$pkg $(sha256sum "$dir/$bin" | cut -c1-16)" --change "ENTRYPOINT [\"/$bin\"]"
}

# The build stage of the Dockerfiles: golang:<version>-bookworm.
go_version=$(sed -n 's/^FROM .*golang:\([0-9.]*\)-bookworm .*/\1/p' "$COPY/docker/auth.Dockerfile")
[ -n "$go_version" ] || fail "docker/auth.Dockerfile builds FROM no golang:<version>-bookworm"
host_go=$(go env GOVERSION)
case "$host_go" in go"$go_version" | go"$go_version".*) ;; *) fail "the Dockerfiles want Go $go_version, this machine has $host_go" ;; esac
golang=golang:$go_version-bookworm
if [ "$(made_from "$golang")" != "$host_go" ]; then
	dir=$WORK/golang
	rootfs "$dir"
	mkdir -p "$dir/usr/local" "$dir/etc/ssl/certs" "$dir/go" "$dir/root"
	cp -a "$(go env GOROOT)" "$dir/usr/local/go"
	cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
	import "$golang" "$dir" "$host_go" \
		--change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV GOPATH=/go' --change 'ENV HOME=/root' --change 'WORKDIR /go'
fi

traefik_version=$("$CACHE/bin/traefik" version | sed -n 's/^Version:[[:space:]]*//p')
for image in $(cd "$COPY" && "$DOCKER" compose --profile dev config --images | sort -u); do
	case "$image" in
	*/pesto-keys-auth:* | */pesto-keys-registration:* | */pesto-demo-api:*) ;; # step 4
	redis:*)
		source="Debian $(redis-server --version | grep -o 'v=[^ ]*')"
		if [ "$(made_from "$image")" != "$source" ]; then
			dir=$WORK/redis
			rootfs "$dir"
			server=$(readlink -f "$(command -v redis-server)")
			cli=$(readlink -f "$(command -v redis-cli)")
			copy_dynamic "$dir" "$server" "$cli"
			mkdir -p "$dir/usr/local/bin" "$dir/data"
			ln -s "$server" "$dir/usr/local/bin/redis-server"
			ln -s "$cli" "$dir/usr/local/bin/redis-cli"
			import "$image" "$dir" "$source" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
				--change 'WORKDIR /data' --change 'CMD ["redis-server"]'
		fi
		;;
	traefik:*)
		case "$traefik_version" in "${image#traefik:}".*) ;; *) fail "$image wanted, tools.sh built Traefik $traefik_version" ;; esac
		# With busybox as the official (Alpine) image has it: the
		# gateway's liveness rule is a shell script that uses wget.
		source="$traefik_version with busybox"
		if [ "$(made_from "$image")" != "$source" ]; then
			dir=$WORK/traefik
			rootfs "$dir"
			mkdir -p "$dir/usr/local/bin" "$dir/etc/traefik"
			cp -L "$CACHE/bin/traefik" "$dir/usr/local/bin/traefik"
			import "$image" "$dir" "$source" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
				--change 'ENTRYPOINT ["/usr/local/bin/traefik"]'
		fi
		;;
	axllent/mailpit:*) static_image "$image" ./e2e/standin/mailcatcher mailpit ;;
	*) fail "compose.yaml names $image: this script does not know how to make it without a registry" ;;
	esac
done

# The flooder of the test's flood steps, run in a container of its own (so
# that the gateway sees it as a client other than the test's probes, which
# come from the host): wrk and its libraries from Debian, and
# deploy/e2e/slowloris.
flood=pesto-e2e-flood:latest
dir=$WORK/flood
rootfs "$dir"
wrk=$(readlink -f "$(command -v wrk)") || fail "wrk is not installed"
copy_dynamic "$dir" "$wrk"
ln -sf "$wrk" "$dir/bin/wrk"
(cd "$ROOT/deploy" && CGO_ENABLED=0 go build -trimpath -o "$dir/bin/slowloris" ./e2e/slowloris)
source="$({ wrk --version 2>&1 || true; } | head -1) $(sha256sum "$dir/bin/slowloris" | cut -c1-16)"
if [ "$(made_from "$flood")" != "$source" ]; then
	import "$flood" "$dir" "$source" --change 'ENV PATH=/bin:/usr/bin'
fi

# ---- 4. Pesto's images, from the Dockerfiles as they are ------------------
# dockerfile IMAGE: the Dockerfile of one of this repository's images.
dockerfile() {
	case "$1" in
	*/pesto-keys-auth:*) echo auth ;;
	*/pesto-keys-registration:*) echo registration ;;
	*/pesto-demo-api:*) echo demo-api ;;
	esac
}
built=0
for image in $(cd "$COPY" && "$DOCKER" compose --profile dev config --images | sort -u); do
	name=$(dockerfile "$image")
	[ -n "$name" ] || continue
	log "docker build -f docker/$name.Dockerfile -t $image"
	DOCKER_BUILDKIT=1 nice -n 10 "$DOCKER" build -q -f "$COPY/docker/$name.Dockerfile" \
		--build-arg VERSION="$PESTO_VERSION" -t "$image" "$COPY" >/dev/null
	# The same Dockerfile for linux/arm64: the build stage runs here (amd64)
	# and cross-compiles; the binary must be an arm64 one that runs.
	arm64=pesto-e2e-arm64/$name:$PESTO_VERSION
	log "docker build --platform linux/arm64 -f docker/$name.Dockerfile -t $arm64"
	DOCKER_BUILDKIT=1 nice -n 10 "$DOCKER" build -q --platform linux/arm64 -f "$COPY/docker/$name.Dockerfile" \
		--build-arg VERSION="$PESTO_VERSION" -t "$arm64" "$COPY" >/dev/null
	arch=$("$DOCKER" image inspect --format '{{.Os}}/{{.Architecture}}' "$arm64")
	[ "$arch" = linux/arm64 ] || fail "$arm64 is $arch, want linux/arm64"
	container=$("$DOCKER" create "$arm64" 2>/dev/null)
	"$DOCKER" cp "$container:/$name" "$WORK/$name-arm64" >/dev/null
	"$DOCKER" rm "$container" >/dev/null
	version=$(qemu-aarch64-static "$WORK/$name-arm64" version) || fail "the arm64 $name does not run under qemu-aarch64-static"
	[ "$version" = "$name $PESTO_VERSION" ] || fail "arm64 $name version: $version"
	log "$arm64: linux/arm64, its /$name runs under qemu-aarch64-static ($version)"
	built=$((built + 1))
done
[ "$built" = 3 ] || fail "built $built of this repository's images, want 3 (compose.yaml's auth, registration, api)"
log "image sizes:"
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '(pesto-keys-|pesto-demo-api|pesto-e2e-arm64/).*:'"$PESTO_VERSION"' ' | sort >&2

# ---- 5. the test ----------------------------------------------------------
log "go test -tags e2e ./deploy/e2e (stack in $COPY)"
PESTO_E2E_DIR=$COPY PESTO_E2E_DOCKER=$DOCKER PESTO_E2E_FLOOD_IMAGE=$flood \
	go test -tags e2e -count=1 -v -timeout 15m ./deploy/e2e

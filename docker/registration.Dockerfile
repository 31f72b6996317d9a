# The registration service: a static Go binary on an empty (scratch) base.
# The build stage runs on the builder's own platform and cross-compiles for
# the target's (TARGETOS/TARGETARCH): an arm64 image needs no emulation.
# Build from the repository root:
#   docker build -f docker/registration.Dockerfile --build-arg VERSION=$(git describe --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t pesto-keys-registration .
# and for another platform: docker build --platform linux/arm64 … (BuildKit).

# The builder's Go is go.work's (a test holds it), written out so that
# Dependabot can propose the next one.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly

# Modules first, in their own layer: it is rebuilt only when a go.mod or
# go.sum changes. The workspace also lists the test-only modules (deploy,
# bench), the gateway's plugin (docker/traefik/admission) and the demo API;
# the image needs none of them, so they leave the workspace here.
COPY go.work ./
COPY shared/go.* shared/
COPY auth/go.* auth/
COPY registration/go.* registration/
RUN go work edit -dropuse=./deploy -dropuse=./bench -dropuse=./docker/traefik/admission -dropuse=./demoapi && go mod download

COPY shared/ shared/
COPY registration/ registration/
ARG VERSION=dev
# Set by BuildKit from --platform (the host's when none is given).
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/registration ./registration

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pesto-keys-registration" \
      org.opencontainers.image.description="Pesto signups, trial keys and key administration" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# For outgoing TLS (rediss://, SMTP, Sentry).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/registration /registration
USER 65532:65532
ENV PORT=3000
EXPOSE 3000
# Exec form: the image has no shell. The subcommand asks /healthz on
# 127.0.0.1:$PORT and exits 0 only on a 200 within 2 s.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/registration", "healthcheck"]
ENTRYPOINT ["/registration"]

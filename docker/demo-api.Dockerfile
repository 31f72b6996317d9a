# The demo stack's stand-in for Pesto's code-execution API (demoapi/, the
# api service of compose.yaml): a static Go binary on an empty (scratch)
# base. The build stage runs on the builder's own platform and
# cross-compiles for the target's (TARGETOS/TARGETARCH).
# Build from the repository root:
#   docker build -f docker/demo-api.Dockerfile --build-arg VERSION=$(git describe --always) -t pesto-demo-api .

# The builder's Go is go.work's (a test holds it), written out so that
# Dependabot can propose the next one.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly

# Modules first, in their own layer (the demo uses the standard library
# only: nothing to download today). The module stands alone, outside the
# workspace.
COPY demoapi/go.* demoapi/
RUN cd demoapi && go mod download

COPY demoapi/ demoapi/
ARG VERSION=dev
# Set by BuildKit from --platform (the host's when none is given).
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \
    cd demoapi && CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/demo-api .

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pesto-demo-api" \
      org.opencontainers.image.description="Stand-in for Pesto's code-execution API: its routes and JSON shapes, no code run" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/demo-api /demo-api
USER 65532:65532
# The gateway's route to the API is http://api:80 (docker/traefik/dynamic.yaml);
# Docker lets an unprivileged user bind a low port inside a container.
ENV PORT=80
EXPOSE 80
# Exec form: the image has no shell. The subcommand asks /api/ping on
# 127.0.0.1:$PORT and exits 0 only on a 200 within 2 s.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/demo-api", "healthcheck"]
ENTRYPOINT ["/demo-api"]

# syntax=docker/dockerfile:1
# coffer, the payment gateway for AI agents, as a container image.
#
#   docker build -t coffer .            (or: podman build -t coffer .)
#   docker run -d --name coffer -p 127.0.0.1:8420:8420 \
#       --env-file coffer.env -v coffer-data:/var/lib/coffer --stop-timeout 30 coffer
#
# Two stages: the first builds the release binary, the second carries only
# that binary, CA certificates (for TLS to Lightning backends and webhooks)
# and an unprivileged user. docs/deploy.md says how to run it.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# .dockerignore keeps the context to the workspace's sources.
COPY . .
# The caches keep crates and built dependencies between builds; the binary
# is copied out of the target cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p coffer \
    && install -D -m 0755 target/release/coffer /out/coffer

FROM debian:bookworm-slim
# ca-certificates: the roots that outgoing TLS is verified against. Not
# pinned to a version: a rebuild takes the security updates of bookworm.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Its own user, with a fixed id so a bind-mounted folder can be given to it:
#   install -d -m 0700 -o 10001 -g 10001 /srv/coffer
RUN groupadd --system --gid 10001 coffer \
    && useradd --system --uid 10001 --gid coffer --home-dir /var/lib/coffer \
        --no-create-home --shell /usr/sbin/nologin coffer \
    && install -d -m 0700 -o coffer -g coffer /var/lib/coffer
COPY --from=build /out/coffer /usr/local/bin/coffer

USER 10001:10001
WORKDIR /var/lib/coffer
# The SQLite database and the node key (each 0600; the folder 0700, which
# a new named volume takes from here and coffer re-tightens at start).
VOLUME ["/var/lib/coffer"]
EXPOSE 8420
ENV COFFER_LOG=info
# SIGTERM: requests in flight finish and the store's queue is committed
# before exit, within 20 s (coffer::server::SHUTDOWN_BOUND_MS); give
# `docker stop` more than that (--stop-timeout 30), its default is 10 s.
STOPSIGNAL SIGTERM
# GET /healthz answered 200, over bash's /dev/tcp: no HTTP client needed in
# the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8420 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/coffer"]
# Inside the container it listens on every interface; publish the port on
# the host's loopback (-p 127.0.0.1:8420:8420) or behind a TLS proxy.
CMD ["serve", "--data", "/var/lib/coffer", "--listen", "0.0.0.0:8420"]

# syntax=docker/dockerfile:1
# Switchboard: docker build -t switchboard .
#
# Stage 1 builds the release binary; stage 2 is Debian slim with only the binary, the CA
# certificates (webhook triggers and rediss:// over TLS) and the default configuration.

FROM rust:1-bookworm AS builder
WORKDIR /src
# No debug info in the shipped binary (Cargo.toml keeps it for local profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_TERM_COLOR=never

# The whole context (see .dockerignore), not just src/: the workspace has three members
# (the broker, bench/ and chaos/), and the binary embeds files from elsewhere too
# (config/default.toml as the built-in default). An earlier version built the
# dependencies first from Cargo.toml alone; cargo cannot load the workspace without
# the other members' Cargo.toml, so that layer failed.
COPY . .
# BuildKit cache mounts keep the registry and the build directory between builds, so a
# change to src/ rebuilds only the crate; the binary leaves the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchboard \
    && cp target/release/switchboard /usr/local/bin/switchboard \
    && /usr/local/bin/switchboard check-config config/default.toml

FROM debian:bookworm-slim
# Not pinned: bookworm's security updates replace old ca-certificates versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin switchboard
COPY --from=builder /usr/local/bin/switchboard /usr/local/bin/switchboard
COPY config/default.toml /etc/switchboard/switchboard.toml
# Serve beyond the container. With the demo app's public secrets the server refuses
# to start: set SWITCHBOARD__APPS__0__JWT__SECRET and SWITCHBOARD__APPS__0__API_KEY
# (or mount a configuration of your own), or add `--demo` to try it out.
ENV SWITCHBOARD__SERVER__LISTEN=0.0.0.0:8080
USER 10001:10001
WORKDIR /
EXPOSE 8080
STOPSIGNAL SIGTERM
# For `docker run`; Kubernetes uses its own probes (k8s/deployment.yaml). No curl here:
# bash's /dev/tcp asks /healthz and greps the status line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# Each WebSocket is a file descriptor: raise the soft fd limit to the hard one (runtimes
# often start containers at a soft 1024), then exec the broker as PID 1 so it gets SIGTERM.
ENTRYPOINT ["/bin/sh", "-c", "ulimit -n \"$(ulimit -H -n)\" 2>/dev/null; exec /usr/local/bin/switchboard \"$@\"", "switchboard"]
CMD ["serve", "--config", "/etc/switchboard/switchboard.toml", "--log-format", "json"]

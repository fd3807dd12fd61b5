# syntax=docker/dockerfile:1.7
#
# One image for every Pulse binary: pulse (standalone, the default command),
# pulse-ingest, pulse-gateway, pulse-heartbeat-checker and pulse-probe.
#
#   docker build -t pulse:local .
#   docker run --rm -p 127.0.0.1:8080:8080 pulse:local        # standalone
#   docker run --rm pulse:local pulse-ingest --help           # any other binary
#
# Dependency caching: the cargo registry and the target directory live in
# BuildKit cache mounts, so a rebuild after a source change only recompiles
# the Pulse crates (no cargo-chef, no dummy sources to keep in step with the
# workspace).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Builds every binary, then copies out each executable whose name starts with
# "pulse" (the target directory is a cache mount, gone after this step) and
# the dashboard that the gateway and the standalone binary serve at "/".
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked --workspace --bins; \
    mkdir -p /out/bin /out/web/dashboard; \
    find target/release -maxdepth 1 -type f -executable -name 'pulse*' -exec cp {} /out/bin/ \; ; \
    ls -l /out/bin; \
    if [ -d web/dashboard ]; then cp -r web/dashboard/. /out/web/dashboard/; fi

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 pulse; \
    useradd --system --uid 10001 --gid pulse --home-dir /app --shell /usr/sbin/nologin pulse
WORKDIR /app
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/web/ /app/web/
# Settings: PULSE__SECTION__KEY variables, or a file named by PULSE_CONFIG.
# Listen on all interfaces: the standalone `pulse` defaults to loopback, which
# no one outside the container could reach. (The services already default to
# 0.0.0.0.) Standalone allows anonymous browsers: publish its port on
# 127.0.0.1 only (`-p 127.0.0.1:8080:8080`) unless you turned that off.
ENV PULSE__HTTP__HOST=0.0.0.0
# gateway.static_dir defaults to "web/dashboard", relative to /app. Logs are
# JSON lines when stderr is not a terminal (telemetry.log_format = "auto").
USER 10001:10001
# 8080: gateway and standalone; 8081: ingest; 8082: heartbeat-checker.
EXPOSE 8080 8081 8082
CMD ["pulse"]

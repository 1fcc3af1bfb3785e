# syntax=docker/dockerfile:1
# Multi-stage build: compile the three binaries, then copy them into a small runtime
# image that runs as a non-root user. One image serves every role:
#   docker run rosbackup enqueuer | worker | migrate | tokens … | sim …
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit cache mounts).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin rosbackup --bin rosbackup-worker --bin rosbackup-enqueuer \
 && mkdir -p /out \
 && cp target/release/rosbackup target/release/rosbackup-worker target/release/rosbackup-enqueuer /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin rosbackup \
 && mkdir -p /shared && chown 10001:10001 /shared
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
# Dashboard/API (enqueuer) and probes/metrics (worker).
EXPOSE 8080 9091
ENV LOG_FORMAT=json ROSBACKUP_HTTP_ADDR=0.0.0.0:8080 ROSBACKUP_METRICS_ADDR=0.0.0.0:9091
ENTRYPOINT ["rosbackup"]
CMD ["--help"]

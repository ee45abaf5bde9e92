# Builds the floe binary; used by docker-compose.yml (MinIO + Floe).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin floe

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/floe /usr/local/bin/floe
EXPOSE 9200
CMD ["floe", "standalone", "--http-addr", "0.0.0.0:9200", "--data-dir", "/var/lib/floe/data", "--cache-dir", "/var/cache/floe"]

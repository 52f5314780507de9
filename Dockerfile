# reprise's container image: the one `reprise` binary on a small Debian base with CA
# certificates, as a non-root user. Where base images cannot be pulled, `scripts/image`
# builds an equivalent image offline from a local build.
#   docker build -t reprise:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# protoc is vendored (protoc-bin-vendored); librdkafka builds with make and perl, which the
# image has.
COPY . .
RUN cargo build --release --locked --bin reprise \
 && strip -o /reprise target/release/reprise

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 reprise \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin reprise
COPY --from=build /reprise /usr/local/bin/reprise
USER 65532:65532
WORKDIR /tmp
# admin / metrics, gRPC, a replayer's --http
EXPOSE 8080 9090 8081
ENTRYPOINT ["/usr/local/bin/reprise"]
CMD ["--help"]

# The backbone image: one binary for `serve`, `relay` and `worker <group>`.
#
#   docker build -t backbone .
#   docker run -p 8080:8080 backbone                              # embedded demo
#   docker run backbone relay --stage prod --ops-listen 0.0.0.0:9090
#
# The build stage runs exactly the README's build command; the runtime stage holds the stripped
# binary, CA certificates and an unprivileged user. `api/tests/container.rs` runs the binary
# the way this file does (its user, environment and health check), since there is no container
# engine on the build machine.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile production -p api --bin backbone \
 && strip target/production/backbone

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/backbone --create-home backbone
COPY --from=build /src/target/production/backbone /usr/local/bin/backbone
USER 10001:10001
WORKDIR /var/lib/backbone
ENV BACKBONE_DATA=/var/lib/backbone/data
ENV BACKBONE_LISTEN=0.0.0.0:8080
ENV BACKBONE_LOG_FORMAT=json
ENV RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["backbone", "probe", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["backbone"]
CMD ["serve"]

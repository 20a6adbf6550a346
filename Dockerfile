# Build: docker build -t meridian .
# Run:   docker run --rm -p 5353:53/udp -p 5353:53/tcp \
#          -v $PWD/meridian.yaml:/etc/meridian/meridian.yaml:ro \
#          -v $PWD/zones:/etc/meridian/zones:ro meridian
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin meridian && strip target/release/meridian

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin meridian
COPY --from=build /src/target/release/meridian /usr/local/bin/meridian
COPY meridian.yaml /etc/meridian/meridian.yaml
COPY zones /etc/meridian/zones
COPY policies /etc/meridian/policies
COPY geoip /etc/meridian/geoip
USER meridian
EXPOSE 53/udp 53/tcp 9153/tcp
# In a container, listen on all interfaces; port 53 needs CAP_NET_BIND_SERVICE, which
# Docker grants by default (or map 5353 on the host to 53 here).
ENTRYPOINT ["/usr/local/bin/meridian"]
CMD ["serve", "--config", "/etc/meridian/meridian.yaml", "--dns-listen", "0.0.0.0:53", "--dns-listen", "[::]:53", "--http-listen", "0.0.0.0:9153"]

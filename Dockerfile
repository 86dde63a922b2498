# idoctor-gate container image: built with the README's release build, run as a non-root user.
#   docker build -t idoctor-gate .
#   docker run -p 9000:9000 -e GATE_UPSTREAM_URL=http://backend:4200 idoctor-gate
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/idoctor-gate gate
COPY --from=build /src/target/release/idoctor-gate /usr/local/bin/idoctor-gate
COPY proxy.toml /etc/idoctor-gate/proxy.toml
USER 10001:10001
WORKDIR /var/lib/idoctor-gate
ENV GATE_CONFIG=/etc/idoctor-gate/proxy.toml \
    GATE_DATA_DIR=/var/lib/idoctor-gate/data
EXPOSE 9000
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/9000 || exit 1"]
ENTRYPOINT ["idoctor-gate"]
CMD ["serve"]

# A conventional multi-stage build for users who build with Docker (or `buildah bud`).
# scripts/image makes the same image from scratch without pulling any base image; it is the one
# the tests run.
#   docker build -t tributary .
#   docker run --rm -p 8080:8080 -v tributary-state:/var/lib/tributary tributary gateway

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev make perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tributary-cli --bins \
    && mkdir /out \
    && for b in tributary tributary-cron-connector tributary-nats-connector \
        tributary-kafka-connector tributary-sqs-connector; do strip -o "/out/$b" "target/release/$b"; done

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 tributary \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/tributary --shell /usr/sbin/nologin tributary \
    && install -d -o 10001 -g 10001 /var/lib/tributary
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/tributary
ENV state_dir=/var/lib/tributary
VOLUME /var/lib/tributary
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tributary"]
CMD ["gateway"]

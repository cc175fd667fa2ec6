# syntax=docker/dockerfile:1
# Gatehouse image: built in Debian's Rust image, run from distroless (glibc, CA
# certificates, a `nonroot` user, no shell, no package manager).
#
#   docker build -t gatehouse .      (BuildKit: Docker 23+ or `docker buildx build`)
#
# PID 1: Gatehouse itself. It handles SIGTERM/SIGINT (drain, then exit 0) and SIGHUP
# (reload) with its own handlers, and starts no child processes, so there are no zombies
# to reap and no init (tini) is needed.

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gatehouse \
    && install -D -m 0755 target/release/gatehouse /out/gatehouse \
    # Binding 80/443 as a non-root user needs NET_BIND_SERVICE: a file capability, which
    # the pod's securityContext must allow (capabilities.add: [NET_BIND_SERVICE]).
    && setcap cap_net_bind_service=+ep /out/gatehouse

FROM gcr.io/distroless/cc-debian12:nonroot
# BuildKit's COPY carries the security.capability attribute set above. A builder that
# drops it shows at start in the hostnetwork overlay: "cannot listen on 0.0.0.0:80 ...
# Permission denied" (the hostport overlay listens on 8080/8443 and needs no capability).
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
USER 65532:65532
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["run"]

# syntax=docker/dockerfile:1
# Build: docker build -t hitless .
# A first version (issue #6 makes it static on scratch/distroless-static and adds k8s/).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin hitless \
 && strip target/release/hitless

# distroless/cc: glibc + CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hitless /usr/local/bin/hitless
USER nonroot:nonroot
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/hitless"]
CMD ["--help"]

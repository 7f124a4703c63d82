# Multi-stage build of a small, non-root image holding only the static binary.
#   docker build -t payi-operator:0.1.0 .
# (No container engine runs in this project's CI; the build is kept standard so
# any engine or `docker buildx` can produce it.) The released, tested image is made
# by `make image` (hack/image.sh, docs/release.md) without an engine; keep USER,
# ENTRYPOINT, CMD and EXPOSE here equal to it: tests/e2e_image.rs compares them.

FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin && echo 'fn main() {}' > src/main.rs && cp src/main.rs src/bin/kubectl-payi.rs \
    && touch src/lib.rs && cargo build --release --locked && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs src/bin/kubectl-payi.rs && cargo build --release --locked \
    && cp target/release/payi-operator /payi-operator

# Distroless static: CA certificates, /etc/passwd with nonroot (65532), nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /payi-operator /payi-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/payi-operator"]
CMD ["run", "--leader-election", "--log-format=json"]

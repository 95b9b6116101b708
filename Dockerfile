# Builds the `polos` binary and the example workers. Used by docker-compose.yml.
FROM rust:1.85-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin polos --examples

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/polos /usr/local/bin/polos
COPY --from=build /src/target/release/examples/daily_report /usr/local/bin/daily_report
COPY --from=build /src/target/release/examples/user_reminder /usr/local/bin/user_reminder
USER nobody
ENTRYPOINT ["polos"]
CMD ["--help"]

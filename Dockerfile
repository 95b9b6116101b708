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
# Every example program, so a service can run any of them as its entrypoint.
COPY --from=build /src/target/release/examples/daily_report /usr/local/bin/daily_report
COPY --from=build /src/target/release/examples/end_of_day_sync /usr/local/bin/end_of_day_sync
COPY --from=build /src/target/release/examples/user_reminder /usr/local/bin/user_reminder
COPY --from=build /src/target/release/examples/scheduled_task /usr/local/bin/scheduled_task
COPY --from=build /src/target/release/examples/daily_digest /usr/local/bin/daily_digest
COPY --from=build /src/target/release/examples/morning_report /usr/local/bin/morning_report
COPY --from=build /src/target/release/examples/manage_schedules /usr/local/bin/manage_schedules
USER nobody
ENTRYPOINT ["polos"]
CMD ["--help"]

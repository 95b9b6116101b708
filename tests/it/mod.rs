mod cron_cli;
mod schedules_api;
mod schedules_cli;
mod schedules_py;
mod streams;
mod ticker;
mod ticker_dst;
mod ticker_failover;

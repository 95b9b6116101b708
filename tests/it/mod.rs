mod cron_cli;
mod streams;
mod ticker;
mod ticker_dst;
mod ticker_failover;

mod cron_cli;
mod streams;

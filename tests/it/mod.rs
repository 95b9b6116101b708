mod cron_cli;
mod schedules_api;
mod schedules_cli;
mod schedules_py;
mod streams;
mod worker;

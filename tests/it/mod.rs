mod schedules_api;
mod schedules_cli;
mod streams;

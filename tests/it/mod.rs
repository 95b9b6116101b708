mod schedules_api;
mod streams;

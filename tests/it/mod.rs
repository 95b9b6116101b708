mod streams;
mod ticker;
mod ticker_failover;

mod streams;
mod worker;

mod streams;
mod ticker;

//! The `chorus` command line.
fn main() {}

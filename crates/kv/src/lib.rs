//! The key-value state machine of Chorus (placeholder while the store is written).
mod command;
pub use command::*;

//! The deterministic simulator of Chorus.
pub mod history;
pub mod linearizability;

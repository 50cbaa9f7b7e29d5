//! Scripts shared by several test binaries of `chorus-sim`.
//!
//! Each file under `tests/` is its own crate, so a script used by two of them lives here and is
//! included with `mod common;`. Not every binary uses every item of every script, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

pub mod figure8;

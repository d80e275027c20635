//! The append-only span log (in progress): frame layout and file access.
//!
//! Nothing uses these items yet outside of tests.
#![cfg_attr(not(test), allow(dead_code))]

mod file;
mod frame;

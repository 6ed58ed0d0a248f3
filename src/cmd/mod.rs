//! The commands `main.rs` dispatches to: build (and `--check`), lock, pull, diff, inspect, run,
//! verify and verify-build. The only modules allowed to call each other's entry points;
//! nothing below calls them.

pub mod build;
pub mod check;
pub mod diff;
pub mod inspect;
pub mod lock;
pub mod pull;
pub mod run;
pub mod verify;
pub mod verify_build;

//! Background jobs (DESIGN.md §7): the stale-session sweeper and the archiver. Each has a
//! `run_once(now)` that tests call with an injected clock, and a `run` loop for the server.

pub mod archiver;
pub mod sweeper;

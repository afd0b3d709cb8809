//! Integration tests: one binary (faster to build and link), the real server in-process.

mod accounting;
mod cli;
mod engine;
mod freeradius;
mod harness;
mod pg_restart;
mod resilience;

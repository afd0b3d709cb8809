//! Integration tests: one binary (faster to build and link), the real server in-process.

mod accounting;
mod api_admin;
mod api_export;
mod api_sessions;
mod api_stats;
mod api_ws;
mod cli;
mod crash;
mod disconnect;
mod engine;
mod freeradius;
mod harness;
mod jobs;
mod multinode;
mod pg_restart;
mod resilience;

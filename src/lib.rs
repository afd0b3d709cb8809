//! radacctd: a RADIUS accounting server with a built-in session store.
//!
//! # Layout
//!
//! Dependencies run one way; only [`app`] wires everything together.
//!
//! - [`radius`] — wire format: framing, authenticator checks, attribute numbers and the
//!   FreeRADIUS-format dictionary. No I/O.
//! - [`ingest`] — the UDP accounting listener, NAS clients and the duplicate cache; turns
//!   datagrams into verified records and answers them after commit.
//! - [`sessions`] — accounting rules (engine), the store (SQLite / PostgreSQL), the
//!   group-commit writer and the hot index of open sessions. Knows nothing of UDP or HTTP.
//! - [`api`] — the HTTP server: the Sessions API, admin endpoints, health, metrics.
//! - [`coa`] — disconnecting sessions: RFC 5176 client, RouterOS API fallback.
//! - [`jobs`] — the stale-session sweeper and the archiver.
//! - [`config`], [`metrics`], [`telemetry`], [`cli`] — configuration, Prometheus metrics,
//!   logging and the command line.

pub mod api;
pub mod app;
pub mod cli;
pub mod coa;
pub mod config;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod radius;
pub mod sessions;
pub mod telemetry;

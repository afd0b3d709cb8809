//! Ingest: the UDP accounting listener, the NAS client table and the duplicate cache.
//! It turns datagrams into verified [`crate::sessions::Record`]s for the writer and
//! answers them once the writer has committed them.

pub mod clients;
pub mod dedup;
pub mod listener;
pub mod request;

pub use clients::Clients;
pub use dedup::Dedup;
pub use listener::{Listener, Responder, Ticket};

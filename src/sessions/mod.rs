//! Sessions: the accounting rules (engine), the store (`radacct` on SQLite or
//! PostgreSQL), the group-commit writer and the hot index of open sessions. This layer
//! knows nothing of UDP or HTTP.

pub mod engine;
pub mod index;
pub mod key;
pub mod model;
pub mod store;
pub mod writer;

pub use engine::Engine;
pub use index::Index;
pub use key::SessionKey;
pub use model::{Record, Session, StatusType};
pub use store::Store;

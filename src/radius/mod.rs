//! RADIUS wire helpers: packet framing and authenticator checks on top of the `radius`
//! crate's codec, attribute numbers, and the FreeRADIUS-format dictionary. Pure code: no
//! tokio, no sockets, so that everything here can be tested with golden bytes and fuzzed.

pub mod attr;
pub mod dictionary;
pub mod packet;

pub use dictionary::Dictionary;
pub use packet::{Code, PacketError};

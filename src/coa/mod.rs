//! Disconnecting sessions on the NAS: the RouterOS API client (the fallback when RADIUS
//! Disconnect-Request fails). The RFC 5176 client joins it with the Sessions API's
//! disconnect endpoint.

pub mod routeros;

//! Session keys: FreeRADIUS's `acctuniqueid` and the derived ids of reused keys.
//!
//! FreeRADIUS 3's `acct_unique` policy sets Acct-Unique-Session-Id to the lower-case hex
//! MD5 of `User-Name,Acct-Session-Id,NAS-IP,NAS-Identifier,NAS-Port-Id,NAS-Port` (NAS-IP
//! being NAS-IPv6-Address when present, else NAS-IP-Address; missing values empty).
//! Computing the same value means rows written by radacctd and by FreeRADIUS name the same
//! session the same way.
//!
//! MikroTik restarts Acct-Session-Id numbering after a reboot, so the same key can name
//! several sessions over time while `acctuniqueid` is UNIQUE. The first row of a key keeps
//! the FreeRADIUS value; each later one gets [`derived_uniqueid`]: the hex MD5 of
//! `<key hex>:<start unix seconds>` (plus `:<n>` in the unlikely case of a collision).
//! It is 32 hex digits like the original, so it fits every FreeRADIUS schema, and the
//! `sessionkey` column keeps the shared key so that all rows of a key can be found.

use md5::{Digest, Md5};

use super::model::Timestamp;

/// The 16-octet MD5 behind an `acctuniqueid`. Held as bytes (not hex text) because the
/// index keeps one per open session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub [u8; 16]);

impl SessionKey {
    /// FreeRADIUS's key for the given attribute values.
    pub fn freeradius(
        user_name: &[u8],
        acct_session_id: &[u8],
        nas_ip: &str,
        nas_identifier: &[u8],
        nas_port_id: &[u8],
        nas_port: Option<u32>,
    ) -> Self {
        let mut h = Md5::new();
        h.update(user_name);
        h.update(b",");
        h.update(acct_session_id);
        h.update(b",");
        h.update(nas_ip.as_bytes());
        h.update(b",");
        h.update(nas_identifier);
        h.update(b",");
        h.update(nas_port_id);
        h.update(b",");
        if let Some(port) = nas_port {
            h.update(port.to_string().as_bytes());
        }
        SessionKey(h.finalize().into())
    }

    /// Parse 32 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(SessionKey(out))
    }

    /// Key of a row read from the database: its `sessionkey` column when set (rows written
    /// by radacctd), else its `acctuniqueid` when that is FreeRADIUS-shaped, else an MD5 of
    /// whatever `acctuniqueid` holds, so that every row still has a stable key.
    pub fn for_row(sessionkey: Option<&str>, acctuniqueid: &str) -> Self {
        sessionkey
            .and_then(Self::from_hex)
            .or_else(|| Self::from_hex(acctuniqueid))
            .unwrap_or_else(|| SessionKey(Md5::digest(acctuniqueid.as_bytes()).into()))
    }

    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0x0f)] as char);
        }
        s
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKey({})", self.to_hex())
    }
}

impl std::fmt::Display for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// `acctuniqueid` for a later session of a reused key; `attempt` is 0 first and rises only
/// if the result is already taken.
pub fn derived_uniqueid(key: &SessionKey, start: Timestamp, attempt: u32) -> String {
    let text = if attempt == 0 {
        format!("{}:{}", key.to_hex(), start)
    } else {
        format!("{}:{}:{}", key.to_hex(), start, attempt)
    };
    SessionKey(Md5::digest(text.as_bytes()).into()).to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Rows written by FreeRADIUS for a MikroTik PPPoE NAS (shared/fixtures/mikrotik/
    // mikrotik_pppoe_radacct_rows.txt). NAS-Identifier "MikroTik" is RouterOS's default
    // identity; the NAS-Port values are the ones that reproduce FreeRADIUS's ids.
    #[test]
    fn matches_freeradius_for_a_router_login_row() {
        let key = SessionKey::freeradius(
            b"bob",
            b"84000003",
            "192.168.68.117",
            b"MikroTik",
            b"",
            None,
        );
        assert_eq!(key.to_hex(), "7a2089bc9e0c2b1127e7e88789c2e755");
    }

    #[test]
    fn matches_freeradius_for_pppoe_rows() {
        let key = SessionKey::freeradius(
            b"bob",
            b"81000004",
            "192.168.68.117",
            b"MikroTik",
            b"bridge1",
            Some(15_728_644),
        );
        assert_eq!(key.to_hex(), "1ff3443d272d276937ce49e1212c0503");
        let key = SessionKey::freeradius(
            b"bob",
            b"8100000a",
            "192.168.68.117",
            b"MikroTik",
            b"bridge1",
            Some(15_728_651),
        );
        assert_eq!(key.to_hex(), "6f9ba70ccd13120b90cc4fe844f16b07");
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let k = SessionKey::from_hex("1FF3443d272d276937ce49e1212c0503").unwrap();
        assert_eq!(k.to_hex(), "1ff3443d272d276937ce49e1212c0503");
        assert!(SessionKey::from_hex("xyz").is_none());
        assert!(SessionKey::from_hex("1ff3443d272d276937ce49e1212c050g").is_none());
        assert!(SessionKey::from_hex("é1ff3443d272d276937ce49e1212c050").is_none());
    }

    #[test]
    fn derived_ids_are_hex_distinct_and_stable() {
        let k = SessionKey::from_hex("1ff3443d272d276937ce49e1212c0503").unwrap();
        let a = derived_uniqueid(&k, 1_700_000_000, 0);
        let b = derived_uniqueid(&k, 1_700_000_100, 0);
        let c = derived_uniqueid(&k, 1_700_000_000, 1);
        assert_eq!(a.len(), 32);
        assert!(SessionKey::from_hex(&a).is_some());
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, k.to_hex());
        assert_eq!(a, derived_uniqueid(&k, 1_700_000_000, 0));
    }

    #[test]
    fn row_key_prefers_sessionkey_column() {
        let k = SessionKey::for_row(Some("1ff3443d272d276937ce49e1212c0503"), "whatever");
        assert_eq!(k.to_hex(), "1ff3443d272d276937ce49e1212c0503");
        let k2 = SessionKey::for_row(None, "1ff3443d272d276937ce49e1212c0503");
        assert_eq!(k, k2);
        let k3 = SessionKey::for_row(None, "not-hex");
        assert_ne!(k3, k);
    }
}

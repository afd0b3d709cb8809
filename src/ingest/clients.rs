//! NAS clients: who may send accounting, and with which secret. Built from the `nas` table
//! (which also holds the config file's clients, synced at start) plus the default localhost
//! client, and swapped whole on reload so the listener never waits for it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use crate::config::DEFAULT_CLIENT_SECRET;
use crate::sessions::store::NasRow;

#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    pub nas_id: Option<i64>,
    pub name: Arc<str>,
    /// Its `nas` label on metrics (`metrics::nas_label`; `unknown` for the default client).
    pub label: Arc<str>,
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nas_id", &self.nas_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct Clients {
    by_ip: RwLock<Arc<HashMap<IpAddr, Client>>>,
}

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl Clients {
    /// Build the table. The default client (127.0.0.1, `testing123`) is added when
    /// `default_client` is set and no NAS row claims 127.0.0.1. Returns whether the default
    /// client is in use, so the caller can warn about it.
    pub fn build(rows: &[NasRow], default_client: bool) -> (HashMap<IpAddr, Client>, bool) {
        let mut map: HashMap<IpAddr, Client> = rows
            .iter()
            .map(|r| {
                (
                    r.config.ip,
                    Client {
                        nas_id: Some(r.id),
                        name: r.config.name.as_str().into(),
                        label: crate::metrics::nas_label(&r.config.name, r.id).into(),
                        secret: r.config.secret.as_bytes().into(),
                    },
                )
            })
            .collect();
        let use_default = default_client && !map.contains_key(&LOCALHOST);
        if use_default {
            map.insert(
                LOCALHOST,
                Client {
                    nas_id: None,
                    name: "localhost".into(),
                    label: "unknown".into(),
                    secret: DEFAULT_CLIENT_SECRET.as_bytes().into(),
                },
            );
        }
        (map, use_default)
    }

    pub fn replace(&self, map: HashMap<IpAddr, Client>) {
        let map = Arc::new(map);
        match self.by_ip.write() {
            Ok(mut guard) => *guard = map,
            Err(poisoned) => *poisoned.into_inner() = map,
        }
    }

    fn current(&self) -> Arc<HashMap<IpAddr, Client>> {
        match self.by_ip.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The client for a source address; IPv4-mapped IPv6 sources (a socket bound to `[::]`)
    /// are matched as IPv4.
    pub fn get(&self, source: IpAddr) -> Option<Client> {
        self.current().get(&source.to_canonical()).cloned()
    }

    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! Disconnecting sessions on the NAS (DESIGN.md §6): RFC 5176 Disconnect-Request to the
//! NAS's CoA port, and when that is refused or unanswered, the RouterOS API fallback
//! (`/ppp/active/remove`). Concurrent requests for the same session share one attempt.

pub mod client;
pub mod routeros;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;

use crate::config::NasConfig;
use crate::metrics as m;
use crate::radius::Dictionary;
use crate::sessions::writer::Closer;
use crate::sessions::{Record, Session, Store};

/// How a disconnect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Disconnect-ACK.
    Coa,
    /// The RouterOS API removed the session.
    Api,
    /// Neither worked.
    Unreachable,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Coa => "coa",
            Method::Api => "api",
            Method::Unreachable => "unreachable",
        }
    }
}

impl Attempt {
    /// The `radacctd_disconnects_total` labels: the channel that gave the final answer and
    /// whether it removed the session. CoA failing with no API configured is
    /// `coa`/`failed`; both failing is `api`/`failed`; no NAS to ask is `none`/`failed`.
    pub fn metric_labels(&self) -> (&'static str, &'static str) {
        match (self.method, self.tried) {
            (Method::Coa, _) => ("coa", "success"),
            (Method::Api, _) => ("api", "success"),
            (Method::Unreachable, "coa+api") => ("api", "failed"),
            (Method::Unreachable, "coa") => ("coa", "failed"),
            (Method::Unreachable, _) => ("none", "failed"),
        }
    }
}

/// One disconnect attempt, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub method: Method,
    /// What was tried: `coa`, `coa+api`, or `none` (the NAS is not configured).
    pub tried: &'static str,
    pub error_cause: Option<String>,
    pub rtt: Duration,
    pub detail: String,
    pub nas: Option<(i64, IpAddr)>,
}

pub struct Disconnector {
    store: Store,
    dictionary: Arc<Dictionary>,
    /// Writes the Admin-Reset stop of a confirmed disconnect. Done inside the shared
    /// attempt, before single-flight ends, so a request arriving meanwhile cannot find the
    /// session still open and send a second Disconnect-Request (which the NAS would NAK).
    closer: Arc<dyn Closer>,
    pub coa_timeout: Duration,
    pub api_timeout: Duration,
    /// `radius.default_client`: sessions from 127.0.0.1 with no `nas` row belong to the
    /// built-in localhost client (secret `testing123`), disconnected on its default CoA
    /// port like any other NAS.
    pub default_client: bool,
    inflight: DashMap<i64, watch::Receiver<Option<Attempt>>>,
}

impl Disconnector {
    pub fn new(store: Store, dictionary: Arc<Dictionary>, closer: Arc<dyn Closer>) -> Self {
        Disconnector {
            store,
            dictionary,
            closer,
            coa_timeout: Duration::from_secs(3),
            api_timeout: Duration::from_secs(5),
            default_client: false,
            inflight: DashMap::new(),
        }
    }

    /// Disconnect `session` on its NAS. A second request for the same session while one
    /// is under way waits for that one's result instead of sending again (`true` in the
    /// result). The attempt runs in its own task, so a client that hangs up does not cut
    /// a disconnect off halfway.
    pub async fn disconnect(self: &Arc<Self>, session: &Session) -> (Attempt, bool) {
        let id = session.radacctid;
        let (mut rx, leader) = match self.inflight.entry(id) {
            Entry::Occupied(e) => (e.get().clone(), false),
            Entry::Vacant(e) => {
                let (tx, rx) = watch::channel(None);
                e.insert(rx.clone());
                let this = Arc::clone(self);
                let session = session.clone();
                tokio::spawn(async move {
                    let attempt = this.attempt(&session).await;
                    let (method, result) = attempt.metric_labels();
                    m::disconnect(method, result);
                    if matches!(attempt.method, Method::Coa | Method::Api) {
                        // If the store cannot take it now, the NAS's own Stop (or the
                        // sweeper) still closes the row; the disconnect itself happened.
                        let record = Record::admin_reset(&session, chrono::Utc::now().timestamp());
                        if !this.closer.submit(record, Duration::from_secs(5)).await {
                            tracing::warn!(
                                radacctid = session.radacctid,
                                "disconnect confirmed but the Admin-Reset stop could not be written yet"
                            );
                        }
                    }
                    let _ = tx.send(Some(attempt));
                    this.inflight.remove(&id);
                });
                (rx, true)
            }
        };
        let attempt = match rx.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        let attempt = attempt.unwrap_or_else(|| Attempt {
            method: Method::Unreachable,
            tried: "none",
            error_cause: None,
            rtt: Duration::ZERO,
            detail: "the disconnect task ended without a result".into(),
            nas: None,
        });
        (attempt, !leader)
    }

    async fn attempt(&self, session: &Session) -> Attempt {
        let started = Instant::now();
        let nas = match self.nas_for(session).await {
            Ok(Some(nas)) => nas,
            Ok(None) => {
                return Attempt {
                    method: Method::Unreachable,
                    tried: "none",
                    error_cause: None,
                    rtt: started.elapsed(),
                    detail: "the session's NAS is not a configured client".into(),
                    nas: None,
                };
            }
            Err(e) => {
                return Attempt {
                    method: Method::Unreachable,
                    tried: "none",
                    error_cause: None,
                    rtt: started.elapsed(),
                    detail: format!("cannot read the nas table: {e}"),
                    nas: None,
                };
            }
        };
        let (nas_id, nas) = nas;
        let f = &session.fields;
        let target = client::Target {
            username: f.username.to_string(),
            acct_session_id: f.acctsessionid.to_string(),
            framed_ip: match f.framedipaddress {
                Some(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            },
            nas_ip: f.nasipaddress,
        };
        let coa_addr = SocketAddr::new(nas.ip, nas.coa_port);
        let coa = client::disconnect(
            coa_addr,
            nas.secret.as_bytes(),
            &target,
            self.coa_timeout,
            &self.dictionary,
        )
        .await;
        let (coa_detail, error_cause) = match coa {
            Ok(client::Reply::Ack { rtt }) => {
                return Attempt {
                    method: Method::Coa,
                    tried: "coa",
                    error_cause: None,
                    rtt,
                    detail: format!("Disconnect-ACK from {coa_addr}"),
                    nas: Some((nas_id, nas.ip)),
                };
            }
            Ok(client::Reply::Nak { error_cause, .. }) => (
                format!(
                    "Disconnect-NAK from {coa_addr} ({})",
                    error_cause.as_deref().unwrap_or("no Error-Cause")
                ),
                error_cause,
            ),
            Ok(client::Reply::Timeout) => (format!("no answer from {coa_addr}"), None),
            Err(e) => (e.to_string(), None),
        };
        tracing::info!(radacctid = session.radacctid, nas = %nas.name, detail = %coa_detail, "Disconnect-Request failed; trying the RouterOS API");
        let (Some(user), Some(password)) = (&nas.api_user, &nas.api_password) else {
            return Attempt {
                method: Method::Unreachable,
                tried: "coa",
                error_cause,
                rtt: started.elapsed(),
                detail: format!("{coa_detail}; no RouterOS API credentials for this NAS"),
                nas: Some((nas_id, nas.ip)),
            };
        };
        let api_addr = SocketAddr::new(nas.ip, nas.api_port);
        // One transport or the other; the API conversation after connecting is the same.
        let (api, transport) = if nas.api_tls {
            let api = tls::disconnect_ppp(
                api_addr,
                nas.api_tls_fingerprint,
                user,
                password,
                &f.username,
                Some(&f.acctsessionid),
                self.api_timeout,
            );
            (
                tokio::time::timeout(self.api_timeout * 3, api).await,
                "RouterOS API-SSL",
            )
        } else {
            let api = routeros::disconnect_ppp(
                api_addr,
                user,
                password,
                &f.username,
                Some(&f.acctsessionid),
                self.api_timeout,
            );
            (
                tokio::time::timeout(self.api_timeout * 3, api).await,
                "RouterOS API",
            )
        };
        let (method, api_detail) = match api {
            Ok(Ok(n)) if n > 0 => (Method::Api, format!("{transport} removed {n} session(s)")),
            Ok(Ok(_)) => (
                Method::Unreachable,
                format!("{transport}: no such active session"),
            ),
            Ok(Err(e)) => (Method::Unreachable, format!("{transport}: {e}")),
            Err(_) => (Method::Unreachable, format!("{transport}: timed out")),
        };
        Attempt {
            method,
            tried: "coa+api",
            error_cause,
            rtt: started.elapsed(),
            detail: format!("{coa_detail}; {api_detail}"),
            nas: Some((nas_id, nas.ip)),
        }
    }

    async fn nas_for(
        &self,
        s: &Session,
    ) -> Result<Option<(i64, NasConfig)>, crate::sessions::store::StoreError> {
        let rows = self.store.nas_list().await?;
        let by_id = s.nas_id.and_then(|id| rows.iter().find(|r| r.id == id));
        let by_ip = || {
            s.fields
                .nasipaddress
                .and_then(|ip| rows.iter().find(|r| r.config.ip == ip))
        };
        if let Some(r) = by_id.or_else(by_ip) {
            return Ok(Some((r.id, r.config.clone())));
        }
        // The built-in localhost client has no `nas` row (and so no id): synthesise its
        // settings, exactly as the listener accepts its packets.
        let localhost = crate::ingest::clients::LOCALHOST;
        let from_localhost = s.fields.nasipaddress == Some(localhost);
        if self.default_client && from_localhost && s.nas_id.is_none() {
            return Ok(Some((
                0,
                NasConfig {
                    name: "localhost".into(),
                    ip: localhost,
                    secret: crate::config::DEFAULT_CLIENT_SECRET.into(),
                    coa_port: crate::config::DEFAULT_COA_PORT,
                    api_user: None,
                    api_password: None,
                    api_port: crate::config::DEFAULT_API_PORT,
                    api_tls: false,
                    api_tls_fingerprint: None,
                    description: None,
                },
            )));
        }
        Ok(None)
    }
}

//! `audit_log`: who disconnected which session, when, how, and what happened.

use super::{Store, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub actor: String,
    pub actor_role: String,
    pub action: String,
    pub radacctid: Option<i64>,
    pub username: Option<String>,
    pub nas_id: Option<i64>,
    pub nasipaddress: Option<String>,
    /// What was tried: `coa`, `coa+api`, `none` when nothing could be sent (the NAS is
    /// not configured), or absent for `already_closed`.
    pub method: Option<String>,
    /// `coa_ack`, `api_removed`, `failed`, `already_closed`, `no_nas`.
    pub result: String,
    /// Error-Cause of a Disconnect-NAK, by dictionary name.
    pub error_cause: Option<String>,
    pub rtt_ms: Option<i64>,
    pub detail: Option<String>,
}

impl Store {
    pub async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        macro_rules! insert {
            ($pool:expr, $sql:expr) => {
                sqlx::query($sql)
                    .bind(&e.actor)
                    .bind(&e.actor_role)
                    .bind(&e.action)
                    .bind(e.radacctid)
                    .bind(&e.username)
                    .bind(e.nas_id)
                    .bind(&e.nasipaddress)
                    .bind(&e.method)
                    .bind(&e.result)
                    .bind(&e.error_cause)
                    .bind(e.rtt_ms)
                    .bind(&e.detail)
                    .execute($pool)
                    .await?
            };
        }
        match self {
            Store::Sqlite(s) => {
                insert!(
                    s.pool(),
                    "INSERT INTO audit_log (actor, actor_role, action, radacctid, username, \
                     nas_id, nasipaddress, method, result, error_cause, rtt_ms, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                );
            }
            Store::Postgres(s) => {
                insert!(
                    s.pool(),
                    "INSERT INTO audit_log (actor, actor_role, action, radacctid, username, \
                     nas_id, nasipaddress, method, result, error_cause, rtt_ms, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7::inet, $8, $9, $10, $11, $12)"
                );
            }
        }
        Ok(())
    }
}

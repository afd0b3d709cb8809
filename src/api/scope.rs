//! What a caller may see. An admin, or a reseller with `sessions.view_all`, sees every
//! session; a reseller sees the sessions of the subscribers of its subtree of the reseller
//! tree; a subscriber sees its own. Resolved per request from the database, so a change to
//! `subscribers` or `resellers` applies to the next request.

use std::collections::HashSet;
use std::sync::Arc;

use super::auth::{Caller, Role, SESSIONS_VIEW_ALL};
use super::error::ApiError;
use crate::sessions::Store;
use crate::sessions::store::query::ScopeFilter;

#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Resellers {
        ids: Vec<i64>,
        usernames: Arc<HashSet<Box<str>>>,
    },
    User(Box<str>),
}

impl Scope {
    pub async fn of(caller: &Caller, store: &Store) -> Result<Scope, ApiError> {
        let c = &caller.claims;
        match c.role {
            Role::Admin => Ok(Scope::All),
            Role::Reseller if caller.has(SESSIONS_VIEW_ALL) => Ok(Scope::All),
            Role::Reseller => {
                let root = c
                    .reseller_id
                    .ok_or(ApiError::Unauthorized("invalid token"))?;
                let ids = store.reseller_subtree(root).await?;
                let usernames = store
                    .usernames_of(&ids)
                    .await?
                    .into_iter()
                    .map(String::into_boxed_str)
                    .collect();
                Ok(Scope::Resellers {
                    ids,
                    usernames: Arc::new(usernames),
                })
            }
            Role::Subscriber => {
                let u = c
                    .username
                    .clone()
                    .ok_or(ApiError::Unauthorized("invalid token"))?;
                Ok(Scope::User(u.into_boxed_str()))
            }
        }
    }

    pub fn allows(&self, username: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Resellers { usernames, .. } => usernames.contains(username),
            Scope::User(u) => &**u == username,
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// The same scope as SQL (see `store::query`).
    pub fn filter(&self) -> ScopeFilter {
        match self {
            Scope::All => ScopeFilter::All,
            Scope::Resellers { ids, .. } => ScopeFilter::Resellers(ids.clone()),
            Scope::User(u) => ScopeFilter::User(u.to_string()),
        }
    }
}

//! Subscribers and the reseller tree: who belongs to whom, for scoping the API.

use sqlx::AssertSqlSafe;

use super::{Store, StoreError};

/// A reseller as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reseller {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub name: String,
}

/// A subscriber as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subscriber {
    pub username: String,
    pub reseller_id: Option<i64>,
    pub is_online: bool,
}

const SUBTREE: &str = "WITH RECURSIVE tree(id) AS (SELECT id FROM resellers WHERE id = {p} \
    UNION SELECT r.id FROM resellers r JOIN tree t ON r.parent_id = t.id) SELECT id FROM tree";

impl Store {
    /// The reseller and every reseller below it (cycle-safe: UNION drops repeats). A
    /// reseller id that does not exist yields just itself, so its scope is empty rather
    /// than an error.
    pub async fn reseller_subtree(&self, id: i64) -> Result<Vec<i64>, StoreError> {
        let mut ids: Vec<i64> = match self {
            Store::Sqlite(s) => {
                sqlx::query_scalar(AssertSqlSafe(SUBTREE.replace("{p}", "?1")))
                    .bind(id)
                    .fetch_all(s.pool())
                    .await?
            }
            Store::Postgres(s) => {
                sqlx::query_scalar(AssertSqlSafe(SUBTREE.replace("{p}", "$1")))
                    .bind(id)
                    .fetch_all(s.pool())
                    .await?
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
        Ok(ids)
    }

    /// Usernames of the subscribers of these resellers.
    pub async fn usernames_of(&self, reseller_ids: &[i64]) -> Result<Vec<String>, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => {
                sqlx::query_scalar(
                    "SELECT username FROM subscribers WHERE reseller_id IN \
                     (SELECT value FROM json_each(?1))",
                )
                .bind(serde_json::to_string(reseller_ids).unwrap_or_default())
                .fetch_all(s.pool())
                .await?
            }
            Store::Postgres(s) => {
                sqlx::query_scalar("SELECT username FROM subscribers WHERE reseller_id = ANY($1)")
                    .bind(reseller_ids)
                    .fetch_all(s.pool())
                    .await?
            }
        })
    }

    /// The reseller of one subscriber (`None`: unknown subscriber or no reseller).
    pub async fn subscriber(&self, username: &str) -> Result<Option<Subscriber>, StoreError> {
        use sqlx::Row as _;
        macro_rules! get {
            ($pool:expr, $sql:expr) => {{
                let row = sqlx::query($sql)
                    .bind(username)
                    .fetch_optional($pool)
                    .await?;
                match row {
                    Some(r) => Some(Subscriber {
                        username: r.try_get("username")?,
                        reseller_id: r.try_get("reseller_id")?,
                        is_online: r.try_get::<i64, _>("online")? != 0,
                    }),
                    None => None,
                }
            }};
        }
        Ok(match self {
            Store::Sqlite(s) => get!(
                s.pool(),
                "SELECT username, reseller_id, CAST(is_online AS INTEGER) AS online \
                 FROM subscribers WHERE username = ?1"
            ),
            Store::Postgres(s) => get!(
                s.pool(),
                "SELECT username, reseller_id, is_online::int8 AS online \
                 FROM subscribers WHERE username = $1"
            ),
        })
    }

    /// Insert or update a reseller by id.
    pub async fn upsert_reseller(
        &self,
        id: i64,
        parent_id: Option<i64>,
        name: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                sqlx::query(
                    "INSERT INTO resellers (id, parent_id, name) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, \
                     name = excluded.name",
                )
                .bind(id)
                .bind(parent_id)
                .bind(name)
                .execute(s.pool())
                .await?;
            }
            Store::Postgres(s) => {
                sqlx::query(
                    "INSERT INTO resellers (id, parent_id, name) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET parent_id = excluded.parent_id, \
                     name = excluded.name",
                )
                .bind(id)
                .bind(parent_id)
                .bind(name)
                .execute(s.pool())
                .await?;
                // Explicit ids must not collide with ids the sequence hands out later.
                sqlx::query(
                    "SELECT setval(pg_get_serial_sequence('resellers', 'id'), \
                     GREATEST((SELECT MAX(id) FROM resellers), 1))",
                )
                .execute(s.pool())
                .await?;
            }
        }
        Ok(())
    }

    pub async fn resellers(&self) -> Result<Vec<Reseller>, StoreError> {
        use sqlx::Row as _;
        macro_rules! list {
            ($pool:expr) => {{
                let rows = sqlx::query("SELECT id, parent_id, name FROM resellers ORDER BY id")
                    .fetch_all($pool)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(Reseller {
                        id: r.try_get("id")?,
                        parent_id: r.try_get("parent_id")?,
                        name: r.try_get("name")?,
                    });
                }
                out
            }};
        }
        Ok(match self {
            Store::Sqlite(s) => list!(s.pool()),
            Store::Postgres(s) => list!(s.pool()),
        })
    }
}

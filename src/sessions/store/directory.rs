//! Subscribers and the reseller tree: who belongs to whom, for scoping the API, and the
//! bulk writes behind the admin endpoints and CSV imports (each all-or-nothing, in one
//! transaction, validated against the database as it is inside that transaction).

use std::collections::{HashMap, HashSet};

use sqlx::AssertSqlSafe;

use super::{Store, StoreError};

/// Rows per statement in bulk writes: large enough that a 10 MiB import is a few dozen
/// round trips, small enough to keep each bound JSON document / array modest.
const CHUNK_ROWS: usize = 5_000;

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

/// A subscriber to insert or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberRow {
    pub username: String,
    pub reseller_id: Option<i64>,
}

/// A reseller to insert or update. `name: None` keeps the stored name (empty for a new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResellerRow {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub name: Option<String>,
}

/// Why a bulk write was refused. `index` is the position in the rows given, so that the
/// caller can name the request field or CSV line at fault; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("unknown reseller_id {id}")]
    UnknownReseller { index: usize, id: i64 },
    #[error("unknown parent_id {parent_id}")]
    UnknownParent { index: usize, parent_id: i64 },
    #[error("reseller tree must not contain cycles")]
    Cycle { index: usize },
    /// The same username or id twice; `first` is where it appeared first.
    #[error("duplicate entry")]
    Duplicate { index: usize, first: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DirectoryError {
    fn from(e: sqlx::Error) -> Self {
        DirectoryError::Store(StoreError::Db(e))
    }
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
                "SELECT username, reseller_id, (CASE WHEN is_online THEN 1 ELSE 0 END)::int8 AS online \
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

    /// One reseller by id.
    pub async fn reseller(&self, id: i64) -> Result<Option<Reseller>, StoreError> {
        Ok(self.resellers().await?.into_iter().find(|r| r.id == id))
    }

    /// One page of subscribers by username, optionally of one reseller (its own, not its
    /// subtree: this is an administration view, not a scope), and the total.
    pub async fn subscribers_page(
        &self,
        reseller_id: Option<i64>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Subscriber>, i64), StoreError> {
        use sqlx::Row as _;
        macro_rules! page {
            ($pool:expr, $online:expr, $p1:expr, $p2:expr, $p3:expr) => {{
                let filter = if reseller_id.is_some() {
                    format!(" WHERE reseller_id = {}", $p1)
                } else {
                    String::new()
                };
                let (lim, off) = if reseller_id.is_some() {
                    ($p2, $p3)
                } else {
                    ($p1, $p2)
                };
                let sql = format!(
                    "SELECT username, reseller_id, {online} AS online FROM subscribers{filter} \
                     ORDER BY username LIMIT {lim} OFFSET {off}",
                    online = $online
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                if let Some(r) = reseller_id {
                    q = q.bind(r);
                }
                let rows = q.bind(limit).bind(offset).fetch_all($pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(Subscriber {
                        username: r.try_get("username")?,
                        reseller_id: r.try_get("reseller_id")?,
                        is_online: r.try_get::<i64, _>("online")? != 0,
                    });
                }
                let count_sql = format!("SELECT COUNT(*) FROM subscribers{filter}");
                let mut c = sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql));
                if let Some(r) = reseller_id {
                    c = c.bind(r);
                }
                let total = c.fetch_one($pool).await?;
                (out, total)
            }};
        }
        Ok(match self {
            Store::Sqlite(s) => page!(s.pool(), "CAST(is_online AS INTEGER)", "?1", "?2", "?3"),
            Store::Postgres(s) => page!(
                s.pool(),
                "(CASE WHEN is_online THEN 1 ELSE 0 END)::int8",
                "$1",
                "$2",
                "$3"
            ),
        })
    }

    /// Insert or update subscribers in one transaction; returns how many rows were given.
    /// Every `reseller_id` must exist (checked here: SQLite runs without foreign-key
    /// enforcement, for FreeRADIUS compatibility). `is_online` of a new subscriber is
    /// computed from its open sessions; an existing subscriber keeps its flag. Usernames
    /// must be unique within `rows`.
    pub async fn put_subscribers(&self, rows: &[SubscriberRow]) -> Result<usize, DirectoryError> {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
        let mut wanted: Vec<i64> = Vec::new();
        let mut first_use: HashMap<i64, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            if let Some(first) = seen.insert(r.username.as_str(), i) {
                return Err(DirectoryError::Duplicate { index: i, first });
            }
            if let Some(id) = r.reseller_id
                && first_use.insert(id, i).is_none()
            {
                wanted.push(id);
            }
        }
        // Which referenced resellers are missing: the one first used earliest is reported,
        // so the caller names the first bad line.
        let missing = |found: Vec<i64>| -> Result<(), DirectoryError> {
            let found: HashSet<i64> = found.into_iter().collect();
            let bad = wanted
                .iter()
                .filter(|id| !found.contains(id))
                .filter_map(|id| first_use.get(id).map(|&index| (index, *id)))
                .min();
            match bad {
                Some((index, id)) => Err(DirectoryError::UnknownReseller { index, id }),
                None => Ok(()),
            }
        };
        match self {
            Store::Sqlite(s) => {
                // IMMEDIATE: take the write lock before reading, so the check and the write
                // see the same data and the upgrade cannot fail half-way with SQLITE_BUSY.
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                let found: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM resellers WHERE id IN (SELECT value FROM json_each(?1))",
                )
                .bind(serde_json::to_string(&wanted).unwrap_or_default())
                .fetch_all(&mut *tx)
                .await?;
                missing(found)?;
                for chunk in rows.chunks(CHUNK_ROWS) {
                    let doc: Vec<(&str, Option<i64>)> = chunk
                        .iter()
                        .map(|r| (r.username.as_str(), r.reseller_id))
                        .collect();
                    // `WHERE true` resolves SQLite's parsing ambiguity of an upsert whose
                    // rows come from a SELECT.
                    sqlx::query(
                        "INSERT INTO subscribers (username, reseller_id, is_online) \
                         SELECT u, r, EXISTS (SELECT 1 FROM radacct WHERE radacct.username = u \
                         AND acctstoptime IS NULL) FROM (SELECT json_extract(value, '$[0]') AS u, \
                         json_extract(value, '$[1]') AS r FROM json_each(?1)) WHERE true \
                         ON CONFLICT(username) DO UPDATE SET reseller_id = excluded.reseller_id, \
                         updated_at = CURRENT_TIMESTAMP",
                    )
                    .bind(serde_json::to_string(&doc).unwrap_or_default())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let found: Vec<i64> =
                    sqlx::query_scalar("SELECT id FROM resellers WHERE id = ANY($1)")
                        .bind(&wanted)
                        .fetch_all(&mut *tx)
                        .await?;
                missing(found)?;
                for chunk in rows.chunks(CHUNK_ROWS) {
                    let users: Vec<&str> = chunk.iter().map(|r| r.username.as_str()).collect();
                    let resellers: Vec<Option<i64>> = chunk.iter().map(|r| r.reseller_id).collect();
                    sqlx::query(
                        "INSERT INTO subscribers (username, reseller_id, is_online) \
                         SELECT u, r, EXISTS (SELECT 1 FROM radacct WHERE radacct.username = u \
                         AND acctstoptime IS NULL) FROM UNNEST($1::text[], $2::int8[]) AS t(u, r) \
                         ON CONFLICT (username) DO UPDATE SET reseller_id = excluded.reseller_id, \
                         updated_at = now()",
                    )
                    .bind(&users)
                    .bind(&resellers)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(rows.len())
    }

    /// Insert or update resellers in one transaction and return them as stored, in the
    /// order given. The tree after the write is checked as a whole: every parent exists
    /// (in the database or among `rows`, in any order) and no reseller is its own
    /// ancestor. Tree writers are serialised (SQLite's write lock, a PostgreSQL table
    /// lock that still lets readers through) so that two concurrent changes cannot each
    /// pass the check and together form a cycle.
    pub async fn put_resellers(
        &self,
        rows: &[ResellerRow],
    ) -> Result<Vec<Reseller>, DirectoryError> {
        use sqlx::Row as _;
        macro_rules! load {
            ($tx:expr) => {{
                let stored = sqlx::query("SELECT id, parent_id, name FROM resellers")
                    .fetch_all(&mut *$tx)
                    .await?;
                let mut existing = HashMap::with_capacity(stored.len());
                for r in &stored {
                    let id: i64 = r.try_get("id")?;
                    let parent: Option<i64> = r.try_get("parent_id")?;
                    let name: String = r.try_get("name")?;
                    existing.insert(id, (parent, name));
                }
                existing
            }};
        }
        let out = match self {
            Store::Sqlite(s) => {
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                let existing = load!(tx);
                let (order, out) = plan_resellers(&existing, rows)?;
                for chunk in order.chunks(CHUNK_ROWS) {
                    let doc: Vec<(i64, Option<i64>, &str)> = chunk
                        .iter()
                        .map(|&i| (out[i].id, out[i].parent_id, out[i].name.as_str()))
                        .collect();
                    sqlx::query(
                        "INSERT INTO resellers (id, parent_id, name) \
                         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                         json_extract(value, '$[2]') FROM json_each(?1) WHERE true \
                         ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, \
                         name = excluded.name",
                    )
                    .bind(serde_json::to_string(&doc).unwrap_or_default())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                out
            }
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query("LOCK TABLE resellers IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                let existing = load!(tx);
                let (order, out) = plan_resellers(&existing, rows)?;
                // Parents before children: the foreign key is checked after each
                // statement, and a chunk may hold a child whose parent is in a later line.
                for chunk in order.chunks(CHUNK_ROWS) {
                    let ids: Vec<i64> = chunk.iter().map(|&i| out[i].id).collect();
                    let parents: Vec<Option<i64>> =
                        chunk.iter().map(|&i| out[i].parent_id).collect();
                    let names: Vec<&str> = chunk.iter().map(|&i| out[i].name.as_str()).collect();
                    sqlx::query(
                        "INSERT INTO resellers (id, parent_id, name) \
                         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[]) \
                         ON CONFLICT (id) DO UPDATE SET parent_id = excluded.parent_id, \
                         name = excluded.name",
                    )
                    .bind(&ids)
                    .bind(&parents)
                    .bind(&names)
                    .execute(&mut *tx)
                    .await?;
                }
                // Explicit ids must not collide with ids the sequence hands out later.
                sqlx::query(
                    "SELECT setval(pg_get_serial_sequence('resellers', 'id'), \
                     GREATEST((SELECT MAX(id) FROM resellers), 1))",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                out
            }
        };
        Ok(out)
    }
}

/// Check the tree that writing `rows` over `existing` (id → (parent, name)) would give,
/// and return the order to write the rows in (parents first) with each row as it will be
/// stored. Pure, so that the tree rules are tested without a database.
fn plan_resellers(
    existing: &HashMap<i64, (Option<i64>, String)>,
    rows: &[ResellerRow],
) -> Result<(Vec<usize>, Vec<Reseller>), DirectoryError> {
    let mut parent_of: HashMap<i64, Option<i64>> =
        existing.iter().map(|(&id, (p, _))| (id, *p)).collect();
    let mut given: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        if let Some(first) = given.insert(r.id, i) {
            return Err(DirectoryError::Duplicate { index: i, first });
        }
        parent_of.insert(r.id, r.parent_id);
    }
    for (i, r) in rows.iter().enumerate() {
        if let Some(p) = r.parent_id
            && !parent_of.contains_key(&p)
        {
            return Err(DirectoryError::UnknownParent {
                index: i,
                parent_id: p,
            });
        }
    }
    // Depth of every reseller reachable from the given rows, walking up iteratively
    // (a deep tree must not overflow the stack); meeting a reseller already on the
    // current path is a cycle.
    let mut depth: HashMap<i64, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let mut path: Vec<i64> = Vec::new();
        let mut on_path: HashSet<i64> = HashSet::new();
        let mut cur = r.id;
        let base = loop {
            if let Some(&d) = depth.get(&cur) {
                break d + 1;
            }
            if !on_path.insert(cur) {
                // Report the earliest given row on the cycle; if the cycle was already in
                // the database, the row that leads into it.
                let start = path.iter().position(|&x| x == cur).unwrap_or(0);
                let index = path[start..]
                    .iter()
                    .filter_map(|id| given.get(id).copied())
                    .min()
                    .unwrap_or(i);
                return Err(DirectoryError::Cycle { index });
            }
            path.push(cur);
            match parent_of.get(&cur).copied().flatten() {
                Some(p) => cur = p,
                None => break 0,
            }
        };
        for (n, id) in path.iter().rev().enumerate() {
            depth.insert(*id, base + n);
        }
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (depth.get(&rows[i].id).copied().unwrap_or(0), i));
    let out = rows
        .iter()
        .map(|r| Reseller {
            id: r.id,
            parent_id: r.parent_id,
            name: match &r.name {
                Some(n) => n.clone(),
                None => existing
                    .get(&r.id)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default(),
            },
        })
        .collect();
    Ok((order, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, parent_id: Option<i64>) -> ResellerRow {
        ResellerRow {
            id,
            parent_id,
            name: None,
        }
    }

    fn tree(pairs: &[(i64, Option<i64>)]) -> HashMap<i64, (Option<i64>, String)> {
        pairs
            .iter()
            .map(|&(id, p)| (id, (p, format!("r{id}"))))
            .collect()
    }

    #[test]
    fn parents_may_come_later_and_are_written_first() {
        let rows = [row(3, Some(2)), row(2, Some(1)), row(1, None)];
        let (order, out) = plan_resellers(&HashMap::new(), &rows).unwrap();
        assert_eq!(order, vec![2, 1, 0]);
        assert_eq!(out[0].name, "");
    }

    #[test]
    fn reparenting_under_a_new_reseller_orders_the_new_one_first() {
        let existing = tree(&[(1, None), (2, Some(1))]);
        let rows = [row(2, Some(5)), row(5, Some(1))];
        let (order, out) = plan_resellers(&existing, &rows).unwrap();
        assert_eq!(order, vec![1, 0]);
        assert_eq!(out[0].name, "r2", "omitted name keeps the stored one");
    }

    #[test]
    fn unknown_parents_and_duplicates_are_refused() {
        let existing = tree(&[(1, None)]);
        assert!(matches!(
            plan_resellers(&existing, &[row(2, Some(1)), row(3, Some(9))]),
            Err(DirectoryError::UnknownParent {
                index: 1,
                parent_id: 9
            })
        ));
        assert!(matches!(
            plan_resellers(&existing, &[row(2, None), row(2, Some(1))]),
            Err(DirectoryError::Duplicate { index: 1, first: 0 })
        ));
    }

    #[test]
    fn cycles_are_refused_with_the_earliest_row_on_them() {
        let existing = tree(&[(1, None), (2, Some(1)), (3, Some(2))]);
        // 1 under its own grandchild.
        assert!(matches!(
            plan_resellers(&existing, &[row(1, Some(3))]),
            Err(DirectoryError::Cycle { index: 0 })
        ));
        // Its own parent.
        assert!(matches!(
            plan_resellers(&existing, &[row(4, Some(1)), row(7, Some(7))]),
            Err(DirectoryError::Cycle { index: 1 })
        ));
        // A cycle entirely within the new rows.
        assert!(matches!(
            plan_resellers(
                &HashMap::new(),
                &[row(10, None), row(11, Some(12)), row(12, Some(11))]
            ),
            Err(DirectoryError::Cycle { index: 1 })
        ));
    }

    #[test]
    fn deep_chains_do_not_recurse() {
        let rows: Vec<ResellerRow> = (1..=100_000)
            .rev()
            .map(|id| row(id, (id > 1).then(|| id - 1)))
            .collect();
        let (order, _) = plan_resellers(&HashMap::new(), &rows).unwrap();
        assert_eq!(rows[order[0]].id, 1);
    }
}

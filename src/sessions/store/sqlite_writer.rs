//! The SQLite group commit on a rusqlite connection of its own, used on a blocking thread.
//!
//! Through sqlx every statement of a commit was a hand-off to sqlx's connection thread and
//! back, and every bound value was first copied into sqlx's argument list: in `perf` of an
//! in-memory ingest run, sqlx's hand-offs and argument building were a fifth of the
//! writer's serial path, which is what limits ingest (docs/BENCHMARKS.md). Here the whole
//! transaction — the same statements as the sqlx path (`sqlite.rs`) — runs in one call on
//! one thread, binding straight from the batch's rows into SQLite's cached statements.
//!
//! Only for databases in a file: an in-memory database belongs to sqlx's connections, and
//! `SqliteStore::commit` keeps the sqlx path for it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::types::ToSql;
use rusqlite::{Connection, OpenFlags, Statement, TransactionBehavior};

use super::sqlite::{
    Partition, SYNC_ONLINE, chunks, insert_events_sql, insert_rows_sql, update_progress_sql,
    update_rows_sql,
};
use super::{Batch, RowValues, StoreError, bind_row};
use crate::config::SqliteSynchronous;

/// Cached statements per connection: four statement kinds in nine chunk sizes, and the
/// online-flag update.
const STATEMENT_CACHE: usize = 64;

/// The writer's connection, opened on first use and again after a failure that left it
/// inside a transaction. Only the writer commits batches, so the mutex is never contended;
/// it is what lets the connection move between the blocking pool's threads.
#[derive(Debug)]
pub(crate) struct WriterConnection {
    file: Arc<Path>,
    synchronous: SqliteSynchronous,
    conn: Mutex<Option<Connection>>,
}

impl WriterConnection {
    pub(crate) fn new(file: Arc<Path>, synchronous: SqliteSynchronous) -> Self {
        WriterConnection {
            file,
            synchronous,
            conn: Mutex::new(None),
        }
    }

    /// Commit `batch` on a blocking thread; the batch comes back with the row ids (in
    /// `batch.rows` order) so that its rows need no copy to cross threads.
    pub(crate) async fn commit(
        self: &Arc<Self>,
        batch: Batch,
    ) -> Result<(Batch, Vec<i64>), StoreError> {
        let this = Arc::clone(self);
        let abandoned = Abandon::default();
        let flag = Arc::clone(&abandoned.0);
        let (batch, ids) = tokio::task::spawn_blocking(move || {
            let ids = this.with(Some(flag), |conn| commit_on(conn, &batch));
            (batch, ids)
        })
        .await
        .map_err(|_| StoreError::CommitThread)?;
        Ok((batch, ids?))
    }

    /// Run `work` on this connection on a blocking thread (see `SqliteStore::on_writer`).
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.with(None, |conn| Ok(work(conn)?)))
            .await
            .map_err(|_| StoreError::CommitThread)?
    }

    /// Close the connection (it is opened again if used). Skipped while a commit holds it —
    /// one abandoned at the shutdown deadline — which then closes with the process.
    pub(crate) fn close(&self) {
        let slot = match self.conn.try_lock() {
            Ok(slot) => Some(slot),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut slot) = slot {
            slot.take();
        }
    }

    /// Run `work` on the connection (opened if need be), with `abandoned` as the flag the
    /// busy handler looks at on this thread meanwhile (`None`: never abandoned).
    fn with<T>(
        &self,
        abandoned: Option<Arc<AtomicBool>>,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _marked = Marked::set(abandoned);
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = match &mut *slot {
            Some(conn) => conn,
            empty => empty.insert(open(&self.file, self.synchronous)?),
        };
        let result = work(conn);
        // A failed commit is rolled back when its transaction is dropped. The connection
        // is not trusted again when something is still open after that (SQLite had rolled
        // back by itself, after a full disk or an I/O error), or when the error was about
        // the database rather than a lock or the data (I/O, read-only, the file replaced
        // or moved under it, corruption): the next batch opens a fresh one, as the pool
        // would hand out a new connection, instead of failing on this one forever.
        if let Err(e) = &result {
            if !conn.is_autocommit() {
                tracing::warn!(
                    "closing the SQLite writer connection left inside a failed transaction"
                );
                *slot = None;
            } else if needs_fresh_connection(e) {
                tracing::warn!(error = %e, "reopening the SQLite writer connection");
                *slot = None;
            }
        }
        result
    }
}

fn open(file: &Path, synchronous: SqliteSynchronous) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // As the pool's connections (`SqliteStore::connect`): wait out another writer (the
    // archiver, an API write) for up to 5 s, unless the commit is abandoned; the journal
    // mode (WAL) is the file's own.
    conn.busy_handler(Some(busy))?;
    let synchronous = match synchronous {
        SqliteSynchronous::Full => "FULL",
        SqliteSynchronous::Normal => "NORMAL",
        SqliteSynchronous::Extra => "EXTRA",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", false)?;
    // A multi-row statement's statement journal (the pages it changed, for undoing it
    // alone) outgrows SQLite's 64 KiB in-memory spill threshold and went to a temp file:
    // its writes were 13 % of a file-backed ingest run in `perf` (a sixth of throughput).
    // In memory it is at most the pages one statement of one batch changes.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// How long the writer waits for another connection's write lock (`busy_timeout` of the
/// pool's connections).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// The abandon flag of the commit running on this (blocking) thread, for `busy`.
    static ABANDONED: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
    /// When the current wait for a lock began.
    static BUSY_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Set when the writer stops waiting for a commit (its future is dropped: the shutdown
/// deadline passed). The blocking thread cannot be cancelled, so it looks at the flag
/// while it waits for the write lock and before `COMMIT`: records the writer gave up on
/// normally stay uncommitted as well as unanswered (`writer.shutdown_grace_secs`). A flag
/// set while `COMMIT` itself runs comes too late: those records are then committed but
/// unanswered, and the NAS's retransmission to the next instance finds them — the same
/// outcome as a crash between a commit and its answers.
#[derive(Default)]
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Marks the current thread's work with its abandon flag, and clears it again however the
/// work ends (a panic included), so that nothing carries over to the next task the
/// blocking pool runs on this thread.
struct Marked;

impl Marked {
    fn set(flag: Option<Arc<AtomicBool>>) -> Marked {
        ABANDONED.with(|a| *a.borrow_mut() = flag);
        Marked
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        ABANDONED.with(|a| a.borrow_mut().take());
    }
}

/// Errors after which the writer's connection is reopened: SQLite reporting the state of
/// the database or its file on this connection. Not a busy or locked database (another
/// writer, waited out on the same connection), a full disk or memory (not the
/// connection's fault, and a new one would fail the same), nor SQLite refusing the data or
/// the statement.
fn needs_fresh_connection(e: &StoreError) -> bool {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            e.is_transient()
                && !matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::OutOfMemory
                        | rusqlite::ErrorCode::OperationInterrupted
                )
        }
        _ => false,
    }
}

fn abandoned() -> bool {
    ABANDONED.with(|a| {
        a.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    })
}

/// The writer connection's busy handler: SQLite's `busy_timeout` (short sleeps until
/// `BUSY_TIMEOUT`), except that an abandoned commit stops waiting at once.
fn busy(attempt: i32) -> bool {
    let now = Instant::now();
    let since = match BUSY_SINCE.get() {
        Some(since) if attempt > 0 => since,
        _ => {
            BUSY_SINCE.set(Some(now));
            now
        }
    };
    if abandoned() || now.duration_since(since) >= BUSY_TIMEOUT {
        return false;
    }
    let pause = match attempt {
        0..=2 => 1,
        3..=9 => 5,
        _ => 25,
    };
    std::thread::sleep(Duration::from_millis(pause));
    true
}

/// Binds values to a statement's parameters in order, as `bind_row!` chains them; the
/// first error is kept for `finish`.
struct Binder<'a, 's> {
    stmt: &'a mut Statement<'s>,
    next: usize,
    error: Option<rusqlite::Error>,
}

impl<'a, 's> Binder<'a, 's> {
    fn new(stmt: &'a mut Statement<'s>) -> Self {
        Binder {
            stmt,
            next: 1,
            error: None,
        }
    }

    fn bind<T: ToSql>(mut self, value: T) -> Self {
        if self.error.is_none()
            && let Err(e) = self.stmt.raw_bind_parameter(self.next, value)
        {
            self.error = Some(e);
        }
        self.next += 1;
        self
    }

    fn finish(self) -> rusqlite::Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

/// The transaction of `SqliteStore::commit` (the same statements, in the same order).
fn commit_on(conn: &mut Connection, batch: &Batch) -> Result<Vec<i64>, StoreError> {
    let Partition {
        mut ids,
        inserts,
        updates,
        progress,
    } = Partition::of(batch);
    // IMMEDIATE: take the write lock (waiting up to the busy timeout) before any statement.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (at, n) in chunks(inserts.len()) {
        let rows = &inserts[at..at + n];
        let mut stmt = tx.prepare_cached(insert_rows_sql(n))?;
        let mut b = Binder::new(&mut stmt);
        for &i in rows {
            b = bind_row!(b, RowValues::of(&batch.rows[i]));
        }
        b.finish()?;
        let position: HashMap<&str, usize> = rows
            .iter()
            .map(|&i| (&*batch.rows[i].acctuniqueid, i))
            .collect();
        let mut returned = stmt.raw_query();
        while let Some(r) = returned.next()? {
            let id: i64 = r.get(0)?;
            let uniqueid = r.get_ref(1)?.as_str().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
            })?;
            if let Some(&i) = position.get(uniqueid) {
                ids[i] = id;
            }
        }
    }
    if let Some(i) = inserts.iter().find(|&&i| ids[i] == 0) {
        let uniqueid = &batch.rows[*i].acctuniqueid;
        return Err(StoreError::NotFound(format!("id of {uniqueid}")));
    }
    for (at, n) in chunks(updates.len()) {
        let mut stmt = tx.prepare_cached(update_rows_sql(n))?;
        let mut b = Binder::new(&mut stmt);
        for &i in &updates[at..at + n] {
            let s = &batch.rows[i];
            b = bind_row!(b, RowValues::of(s)).bind(s.radacctid);
        }
        b.finish()?;
        stmt.raw_execute()?;
    }
    for (at, n) in chunks(progress.len()) {
        let mut stmt = tx.prepare_cached(update_progress_sql(n))?;
        let mut b = Binder::new(&mut stmt);
        for &i in &progress[at..at + n] {
            let s = &batch.rows[i];
            b = b
                .bind(s.update)
                .bind(s.interval)
                .bind(s.session_time)
                .bind(s.input_octets)
                .bind(s.output_octets)
                .bind(s.radacctid);
        }
        b.finish()?;
        stmt.raw_execute()?;
    }
    let events = Partition::events(batch, &ids);
    for (at, n) in chunks(events.len()) {
        let mut stmt = tx.prepare_cached(insert_events_sql(n))?;
        let mut b = Binder::new(&mut stmt);
        for &(id, e) in &events[at..at + n] {
            b = b
                .bind(id)
                .bind(e.kind)
                .bind(e.time)
                .bind(e.session_time)
                .bind(e.input_octets)
                .bind(e.output_octets)
                .bind(e.source.as_str());
        }
        b.finish()?;
        stmt.raw_execute()?;
    }
    if let Some(names) = Partition::usernames_json(batch) {
        tx.prepare_cached(SYNC_ONLINE)?.execute([names])?;
    }
    if abandoned() {
        return Err(StoreError::Abandoned);
    }
    tx.commit()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::super::sqlite::SqliteStore;
    use super::super::{Batch, StoreError};
    use crate::config::{DatabaseConfig, SqliteSynchronous};
    use crate::sessions::key::SessionKey;
    use crate::sessions::model::{Fields, Session};

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("w.db").display()),
            max_connections: 2,
            sqlite_synchronous: SqliteSynchronous::Full,
            connect_timeout: std::time::Duration::from_secs(5),
        };
        let store = SqliteStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    fn new_row(n: u8, acctuniqueid: &str) -> Session {
        Session {
            radacctid: 0,
            acctuniqueid: acctuniqueid.into(),
            key: SessionKey([n; 16]),
            nas_id: None,
            fields: Fields {
                username: format!("user{n}").into(),
                acctsessionid: format!("s{n}").into(),
                ..Fields::default()
            },
            start: 1_764_000_000,
            update: 1_764_000_000,
            stop: None,
            interval: None,
            session_time: 0,
            input_octets: 0,
            output_octets: 0,
            terminate_cause: None,
            connectinfo_stop: None,
            stop_source: None,
        }
    }

    /// A batch of new rows only.
    fn inserts(rows: Vec<Session>) -> Batch {
        Batch {
            rows,
            ..Batch::default()
        }
    }

    async fn count(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM radacct")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// The rows are committed through the writer's own connection with the ids SQLite gave
    /// them, in the batch's order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_rows_come_back_with_their_ids_in_batch_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let rows: Vec<Session> = (1..=40).map(|n| new_row(n, &format!("u{n:02}"))).collect();
        let (batch, ids) = store.commit(inserts(rows)).await.unwrap();
        assert_eq!(count(&store).await, 40);
        for (row, id) in batch.rows.iter().zip(&ids) {
            let stored: String =
                sqlx::query_scalar("SELECT acctuniqueid FROM radacct WHERE radacctid = ?1")
                    .bind(id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(stored, &*row.acctuniqueid);
        }
    }

    /// A batch SQLite refuses for its data (two rows with one `acctuniqueid`) is refused as
    /// a whole, classed as data (so the writer retries its records one by one rather than
    /// holding everything), and leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_constraint_violation_is_refused_whole_and_not_transient() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let batch = inserts(vec![
            new_row(1, "same"),
            new_row(2, "other"),
            new_row(3, "same"),
        ]);
        let err = store.commit(batch).await.unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
        assert!(!err.is_transient(), "{err}");
        assert_eq!(count(&store).await, 0);
    }

    /// A connection left inside a transaction (as when SQLite's own rollback after a full
    /// disk is followed by a failed one) is not used again: that commit fails, the next one
    /// gets a fresh connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_connection_left_in_a_transaction_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store
            .on_writer(|c| c.execute_batch("BEGIN"))
            .await
            .unwrap()
            .unwrap();
        let one = |n| inserts(vec![new_row(n, &format!("r{n}"))]);
        assert!(store.commit(one(1)).await.is_err());
        store.commit(one(2)).await.expect("a fresh connection");
        assert_eq!(count(&store).await, 1);
        let in_tx = store
            .on_writer(|c| Ok(!c.is_autocommit()))
            .await
            .unwrap()
            .unwrap();
        assert!(!in_tx);
    }

    /// A connection that SQLite reports as unable to write (here `query_only`, standing for
    /// a connection whose file went read-only or failed under it) is replaced: that commit
    /// fails as transient, the next one runs on a fresh connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_connection_that_cannot_write_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store
            .on_writer(|c| c.pragma_update(None, "query_only", true))
            .await
            .unwrap()
            .unwrap();
        let one = |n| inserts(vec![new_row(n, &format!("q{n}"))]);
        let err = store.commit(one(1)).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        store.commit(one(2)).await.expect("a fresh connection");
        assert_eq!(count(&store).await, 1);
    }

    /// Closing the store closes the writer's connection too: the last connection to go
    /// checkpoints the WAL into the file and removes it, so a stopped server's database is
    /// one file that can be copied alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_the_store_leaves_no_wal_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.commit(inserts(vec![new_row(1, "r1")])).await.unwrap();
        let wal = dir.path().join("w.db-wal");
        assert!(wal.exists(), "setup: the commit went through the WAL");
        store.close().await;
        assert!(!wal.exists(), "the WAL outlived the store's connections");
    }
}

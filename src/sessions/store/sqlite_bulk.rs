//! Bulk reads of SQLite rows — the index rebuild at start and CSV exports — through a
//! read-only rusqlite connection on a blocking thread.
//!
//! sqlx passes every row from its connection thread to the async task on its own, and
//! copies every value of it on the way (`sqlite3_value_dup`, then frees the copies): at
//! 1,000,000 open rows, `perf` put three quarters of a 19 s index rebuild there, and a
//! 500,000-row export ran at the same pace (docs/BENCHMARKS.md). Here SQLite's own cursor
//! is stepped and each row decoded in place on a blocking thread, and the sessions travel
//! in chunks to the consumer, which works meanwhile on the other core (loading the index,
//! writing CSV). A dropped stream stops the read at the next chunk.
//!
//! Only for databases in a file: an in-memory database is private to its sqlx
//! connection, and the callers keep the sqlx path for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use rusqlite::types::{FromSql, Value};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::{StoreError, session_from_row};
use crate::sessions::model::Session;

/// Sessions per message from the reading thread: one wake-up per chunk, not per row.
const CHUNK: usize = 512;
/// Chunks in flight; with `CHUNK` this bounds what a slow consumer (an HTTP client reading
/// an export slowly) makes the reader hold.
const CHUNKS_IN_FLIGHT: usize = 4;

/// `try_get` by column name, as `session_from_row!` calls it, on a rusqlite row whose
/// column names were read once per statement: rusqlite's own lookup by name asks SQLite
/// for every column's name on every call (half of a rebuild's time in `perf`).
struct Named<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    names: &'r [String],
}

trait TryGet {
    fn try_get<T: FromSql, N: AsRef<str>>(&self, name: N) -> rusqlite::Result<T>;
}

impl TryGet for Named<'_, '_> {
    fn try_get<T: FromSql, N: AsRef<str>>(&self, name: N) -> rusqlite::Result<T> {
        let name = name.as_ref();
        match self.names.iter().position(|n| n == name) {
            Some(i) => self.row.get(i),
            None => Err(rusqlite::Error::InvalidColumnName(name.to_owned())),
        }
    }
}

/// Interrupts the reader's statement when the stream is dropped (an export whose client
/// went away): otherwise a selective query would go on stepping through the table, and
/// holding its read snapshot, until the next full chunk. Harmless once the read is done.
struct StopReader(rusqlite::InterruptHandle);

impl Drop for StopReader {
    fn drop(&mut self) {
        self.0.interrupt();
    }
}

/// What the reading thread sends: chunks of sessions, then `End`. A channel that closes
/// without `End` (the thread panicked, or the runtime shut down under it) is an error,
/// never a short result that looks complete.
enum Message {
    Rows(Vec<Session>),
    End,
}

/// The sessions of `sql` (a `ROW_SOURCE` query) with `params` bound in order, read from
/// the database file `file` on a blocking thread.
pub(crate) fn sessions(
    file: Arc<Path>,
    sql: String,
    params: Vec<Value>,
) -> BoxStream<'static, Result<Session, StoreError>> {
    let conn = match open(&file) {
        Ok(conn) => conn,
        Err(e) => return stream::once(async move { Err(e.into()) }).boxed(),
    };
    let stop = StopReader(conn.get_interrupt_handle());
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || match read(&conn, &sql, params, &tx) {
        Ok(()) => {
            let _ = tx.blocking_send(Ok(Message::End));
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
        }
    });
    chunks_to_sessions(rx, stop)
}

/// The consumer's side of `sessions`: chunks until `End`; a channel closed without `End`
/// ends the stream with `ReaderStopped`.
fn chunks_to_sessions(
    rx: mpsc::Receiver<Result<Message, StoreError>>,
    stop: StopReader,
) -> BoxStream<'static, Result<Session, StoreError>> {
    stream::unfold(Some((rx, stop)), |state| async move {
        let (mut rx, stop) = state?;
        match rx.recv().await {
            Some(Ok(Message::Rows(rows))) => Some((Ok(rows), Some((rx, stop)))),
            Some(Ok(Message::End)) => None,
            Some(Err(e)) => Some((Err(e), None)),
            None => Some((Err(StoreError::ReaderStopped), None)),
        }
    })
    .flat_map(|chunk| match chunk {
        Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
        Err(e) => stream::once(async move { Err(e) }).right_stream(),
    })
    .boxed()
}

fn open(file: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // As the pool's connections: wait out a checkpoint or WAL recovery holding a lock.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Every session of `stmt` (a prepared `ROW_SOURCE` query) with `params`, decoded in place:
/// the writer's lookup of a batch's keys (`SqliteStore::rows_for_keys`).
pub(super) fn collect(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Session>> {
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let row = Named { row, names: &names };
        out.push(session_from_row!(@ &row, rusqlite::Error, TryGet)?);
    }
    Ok(out)
}

fn read(
    conn: &Connection,
    sql: &str,
    params: Vec<Value>,
    tx: &mpsc::Sender<Result<Message, StoreError>>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(row) = rows.next()? {
        let row = Named { row, names: &names };
        chunk.push(session_from_row!(@ &row, rusqlite::Error, TryGet)?);
        if chunk.len() == CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if tx.blocking_send(Ok(Message::Rows(full))).is_err() {
                return Ok(()); // the consumer went away (client disconnected)
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(Message::Rows(chunk)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::super::sqlite::SqliteStore;
    use crate::config::{DatabaseConfig, SqliteSynchronous};

    /// A file database with `n` open rows, ids 1..=n.
    async fn store_with_rows(dir: &tempfile::TempDir, n: i64) -> SqliteStore {
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("r.db").display()),
            max_connections: 2,
            sqlite_synchronous: SqliteSynchronous::Full,
            connect_timeout: std::time::Duration::from_secs(5),
        };
        let store = SqliteStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO radacct (radacctid, acctsessionid, acctuniqueid, username, \
             nasipaddress, acctstarttime, acctsessiontime) \
             SELECT i, 's' || i, 'u' || i, 'user' || i, '10.0.0.1', '2026-12-03 10:00:00', 60 \
             FROM n",
        )
        .bind(n)
        .execute(store.pool())
        .await
        .unwrap();
        store
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_row_arrives_once_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * super::CHUNK as i64 + 7;
        let store = store_with_rows(&dir, n).await;
        let mut ids: Vec<i64> = store
            .open_sessions()
            .map(|s| s.unwrap().radacctid)
            .collect()
            .await;
        ids.sort_unstable();
        assert_eq!(ids, (1..=n).collect::<Vec<_>>());
    }

    /// A reader thread that stops without its end marker (a panic, a runtime shut down
    /// under it) ends the stream with an error after the rows it sent, never as a short
    /// result that looks complete.
    #[tokio::test]
    async fn a_reader_gone_without_its_end_marker_is_an_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(super::CHUNKS_IN_FLIGHT);
        let stream = super::chunks_to_sessions(rx, super::StopReader(conn.get_interrupt_handle()));
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_rows(&dir, 3).await;
        let rows: Vec<_> = store.open_sessions().map(Result::unwrap).collect().await;
        tx.send(Ok(super::Message::Rows(rows))).await.unwrap();
        drop(tx);
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 4, "the three rows, then the error");
        assert!(items[..3].iter().all(Result::is_ok));
        let err = items[3].as_ref().unwrap_err();
        assert!(
            matches!(err, crate::sessions::store::StoreError::ReaderStopped),
            "{err}"
        );
    }

    /// A row that cannot be decoded, after whole chunks went out, ends the stream with an
    /// error classed as bad data (not "store down"), and nothing after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_undecodable_row_ends_the_stream_with_a_data_error() {
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * super::CHUNK as i64;
        let store = store_with_rows(&dir, n).await;
        sqlx::query("UPDATE radacct SET acctsessiontime = 'many' WHERE radacctid = ?1")
            .bind(super::CHUNK as i64 + 3)
            .execute(store.pool())
            .await
            .unwrap();
        let items: Vec<_> = store.open_sessions().collect().await;
        let (last, before) = items.split_last().unwrap();
        let err = last.as_ref().unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(before.iter().all(Result::is_ok));
        assert!(before.len() >= super::CHUNK && before.len() < n as usize);
    }
}

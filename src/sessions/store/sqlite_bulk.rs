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

/// The sessions of `sql` (a `ROW_SOURCE` query) with `params` bound in order, read from
/// the database file `file` on a blocking thread.
pub(crate) fn sessions(
    file: Arc<Path>,
    sql: String,
    params: Vec<Value>,
) -> BoxStream<'static, Result<Session, StoreError>> {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read(&file, &sql, params, &tx) {
            let _ = tx.blocking_send(Err(e.into()));
        }
    });
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .flat_map(|chunk| match chunk {
        Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
        Err(e) => stream::once(async move { Err(e) }).right_stream(),
    })
    .boxed()
}

fn read(
    file: &Path,
    sql: &str,
    params: Vec<Value>,
    tx: &mpsc::Sender<Result<Vec<Session>, StoreError>>,
) -> rusqlite::Result<()> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // As the pool's connections: wait out a checkpoint or WAL recovery holding a lock.
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(row) = rows.next()? {
        let row = Named { row, names: &names };
        chunk.push(session_from_row!(@ &row, rusqlite::Error, TryGet)?);
        if chunk.len() == CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(()); // the consumer went away (client disconnected)
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}

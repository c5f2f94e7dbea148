//! Where SQLite and PostgreSQL differ, as the store's SQL (`sql/`) sees them.
//!
//! Everything else is written alike for both: placeholders are `$1` (sqlx's SQLite driver
//! numbers them as PostgreSQL does), the order rows were written in is `rowid` (SQLite's own
//! row number; a `BIGSERIAL` column of that name in PostgreSQL), booleans are bound as `bool`
//! (an `INTEGER` 0 or 1 in SQLite), an attempt's output as bytes, and a parameter that may be
//! NULL is typed with `CAST($n AS TEXT)` (or the column's type).
//!
//! The defaults are a database with one writer at a time (SQLite): a transaction that writes
//! holds the whole database, so rows need no locks of their own. A database whose writers run
//! side by side (PostgreSQL) says how it locks.

use sqlx::{Database, QueryBuilder, Transaction};

use self_healing::BoxFuture;

use super::Result;
use super::projection::{ItemDone, StatementBound};
use super::work::WorkQueue;

/// What a backend tells the SQL written once for every backend.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;

    /// The schema's versions, applied in order; the store records how far it got.
    const MIGRATIONS: &'static [&'static str];

    /// How many item completions one statement carries. By default (SQLite, in the process)
    /// 2,000: 12,000 bind parameters, under SQLite's 32,766, and ten times fewer statements
    /// than with 200 (journaled million: 213–263 k → 243–303 k items/s).
    const STATEMENT: StatementBound = StatementBound {
        rows: 2000,
        bytes: usize::MAX,
        fixed_text: false,
    };

    /// Ends a `SELECT` of rows that the transaction reads and then writes, so a second writer
    /// waits for them (PostgreSQL: `FOR UPDATE`). Nothing by default: there
    /// [`begin_write`](Self::begin_write) holds the database's only write lock.
    const FOR_UPDATE: &'static str = "";

    /// Ends the subquery that picks rows to claim, so a claimant passes over the rows another
    /// is claiming instead of waiting to take them again (PostgreSQL: `FOR UPDATE SKIP
    /// LOCKED`). Nothing by default: there one statement runs at a time.
    const SKIP_LOCKED: &'static str = "";

    /// Begins a transaction that writes outside the journal, safe for one that reads what it
    /// then writes (a claim, a merge). SQLite takes its write lock at once (`BEGIN
    /// IMMEDIATE`), so a journal commit in between cannot turn the write into `SQLITE_BUSY`;
    /// PostgreSQL begins plainly and locks rows with [`FOR_UPDATE`](Self::FOR_UPDATE).
    fn begin_write(&self) -> BoxFuture<'_, Result<Transaction<'static, Self::Db>>>;

    /// Begins a transaction that appends to the journal. PostgreSQL takes the journal's
    /// advisory lock, so ids and row numbers commit in the order they were handed out and a
    /// reader following the journal never steps over one still being written; SQLite's single
    /// writer gives that for free.
    fn begin_journal(&self) -> BoxFuture<'_, Result<Transaction<'static, Self::Db>>>;

    /// The statement that inserts item completions as `succeeded` rows of `items`, open for
    /// what follows it (`ON CONFLICT`, `RETURNING`). SQLite lists them as `VALUES`; PostgreSQL
    /// binds each column as one array and reads them back with `UNNEST`, a statement it plans
    /// and sets up in the same few steps however many rows it carries.
    fn insert_completions(done: &[ItemDone<'_>]) -> QueryBuilder<Self::Db>;

    /// Begins the transaction migrations run in, so that one process at a time migrates: by
    /// default [`begin_write`](Self::begin_write)'s (PostgreSQL: an advisory lock).
    fn begin_migration(&self) -> BoxFuture<'_, Result<Transaction<'static, Self::Db>>> {
        self.begin_write()
    }

    /// What [`Control::work_queue`](super::Control::work_queue) answers: `None` by default,
    /// a database one machine holds.
    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        None
    }
}

//! One statement, either engine: how the store's functions run on SQLite and PostgreSQL
//! without knowing which.
//!
//! A store function names where a statement runs ([`Db::read`], [`Db::write`] or a
//! transaction's [`Tx::exec`]) and writes it once with `?` placeholders, through [`sql!`]:
//! on SQLite it runs as written (the very call the function made before PostgreSQL was
//! supported), on PostgreSQL with the placeholders numbered (`$1`, `$2`, …). Where the two
//! dialects differ, the statement gives both texts (`sqlite = "…", pg = "…"`). Rows decode
//! into the same Rust types on both engines (`FromRow`, tuples, scalars). sqlx's `Any`
//! driver would do this with values decoded at run time and without PostgreSQL's types;
//! here each engine keeps its own typed driver.
//!
//! The group-commit writer is not written this way: each engine has its own (see
//! [`super::writer`] and [`super::pg::writer`]).

use std::sync::OnceLock;

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::{Db, EngineKind};

/// Where one statement runs.
pub enum Exec<'a> {
    SqlitePool(&'a SqlitePool),
    SqliteConn(&'a mut SqliteConnection),
    PgPool(&'a PgPool),
    PgConn(&'a mut PgConnection),
}

/// A configuration write's transaction, on either engine.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    /// Its connection, for the statements of the transaction.
    pub fn exec(&mut self) -> Exec<'_> {
        match self {
            Self::Sqlite(tx) => Exec::SqliteConn(tx),
            Self::Postgres(tx) => Exec::PgConn(tx),
        }
    }

    pub fn engine(&self) -> EngineKind {
        match self {
            Self::Sqlite(_) => EngineKind::Sqlite,
            Self::Postgres(_) => EngineKind::Postgres,
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}

impl Db {
    /// Where reads run: SQLite's read-only pool, or PostgreSQL's pool.
    pub fn read(&self) -> Exec<'_> {
        match self {
            Self::Sqlite(db) => Exec::SqlitePool(&db.read),
            Self::Postgres(db) => Exec::PgPool(&db.pool),
        }
    }

    /// Where a single-statement configuration write runs: SQLite's one write connection,
    /// or PostgreSQL's pool.
    pub fn write(&self) -> Exec<'_> {
        match self {
            Self::Sqlite(db) => Exec::SqlitePool(&db.write),
            Self::Postgres(db) => Exec::PgPool(&db.pool),
        }
    }
}

/// `sql` with its `?` placeholders numbered for PostgreSQL: `?` becomes `$1`, `$2`, … in
/// order and `?N` becomes `$N`. Question marks inside quoted text are left alone.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 0;
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&next.to_string());
                } else {
                    out.push_str(&digits);
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// [`numbered`], once per statement text written in the code.
pub fn numbered_once(cell: &'static OnceLock<String>, sql: &str) -> &'static str {
    cell.get_or_init(|| numbered(sql))
}

/// Runs one statement on either engine; see the module's documentation.
///
/// `sql!(db.read(), query_as("SELECT … WHERE id = ?").bind(id).fetch_one)` and the like,
/// with `query`, `query_as` or `query_scalar` and `fetch_one`, `fetch_optional`,
/// `fetch_all` or `execute` (which gives the number of rows it changed). Awaits it.
macro_rules! sql {
    (@finish execute, $done:expr) => {
        $done.map(|done| done.rows_affected())
    };
    (@finish $run:ident, $done:expr) => {
        $done
    };
    // The statement's binds, gathered one `.bind(…)` at a time, up to the call that runs it.
    (@chain $exec:expr, $make:ident $text:tt [$($b:expr),*] .bind($nb:expr) $($rest:tt)*) => {
        $crate::store::sql::sql!(@chain $exec, $make $text [$($b,)* $nb] $($rest)*)
    };
    (@chain $exec:expr, $make:ident $text:tt [$($b:expr),*] .$run:ident) => {
        $crate::store::sql::sql!(@run $exec, $make $text [$($b),*] $run)
    };
    (@run $exec:expr, $make:ident ( sqlite = $lite:expr, pg = $pg:expr $(,)? ) [$($b:expr),*] $run:ident) => {{
        match $exec {
            $crate::store::sql::Exec::SqlitePool(e) => {
                $crate::store::sql::sql!(@finish $run, sqlx::$make($lite)$(.bind($b))*.$run(e).await)
            }
            $crate::store::sql::Exec::SqliteConn(e) => {
                $crate::store::sql::sql!(@finish $run, sqlx::$make($lite)$(.bind($b))*.$run(&mut *e).await)
            }
            $crate::store::sql::Exec::PgPool(e) => {
                $crate::store::sql::sql!(@finish $run, sqlx::$make($pg)$(.bind($b))*.$run(e).await)
            }
            $crate::store::sql::Exec::PgConn(e) => {
                $crate::store::sql::sql!(@finish $run, sqlx::$make($pg)$(.bind($b))*.$run(&mut *e).await)
            }
        }
    }};
    (@run $exec:expr, $make:ident ( $text:literal $(,)? ) [$($b:expr),*] $run:ident) => {{
        static PG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        $crate::store::sql::sql!(@run $exec, $make (
            sqlite = $text,
            pg = $crate::store::sql::numbered_once(&PG, $text),
        ) [$($b),*] $run)
    }};
    (@run $exec:expr, $make:ident ( $text:expr $(,)? ) [$($b:expr),*] $run:ident) => {{
        // A text built at run time is numbered each time (a `match` keeps its temporaries).
        match $text {
            text => {
                let text: &str = text;
                let pg = $crate::store::sql::numbered(text);
                $crate::store::sql::sql!(@run $exec, $make (
                    sqlite = text,
                    pg = pg.as_str(),
                ) [$($b),*] $run)
            }
        }
    }};
    ($exec:expr, $make:ident $text:tt $($rest:tt)*) => {
        $crate::store::sql::sql!(@chain $exec, $make $text [] $($rest)*)
    };
}
pub(crate) use sql;

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quoted_text() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND c = ? AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $2 AND d = '?'"
        );
        assert_eq!(
            numbered("DELETE FROM t WHERE a = ?1 OR b = ?1 AND c = ?2"),
            "DELETE FROM t WHERE a = $1 OR b = $1 AND c = $2"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
    }
}

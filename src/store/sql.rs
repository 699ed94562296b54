//! The one interface the table-family functions speak SQL through, whichever database is
//! behind it: [`Conn`] runs a statement with [`Value`] arguments and hands back [`Row`]s.
//!
//! Statements are written once, in the SQL both backends understand, with SQLite's `?N`
//! placeholders; the PostgreSQL backend rewrites them to `$N` (and caches the prepared
//! statement per connection, as SQLite's statement cache does). Integers are 64-bit on both
//! (`INTEGER` in SQLite, `BIGINT` in PostgreSQL), byte strings are `BLOB` / `BYTEA`.

use std::sync::{Mutex, PoisonError};

use rusqlite::types::{Value as SqliteValue, ValueRef};

use super::{Result, StoreError};

/// One SQL value, as both backends store it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// What can be passed as a statement argument.
pub trait ToValue: Sync {
    fn to_value(&self) -> Value;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}

impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Statement arguments: `args![a, b, c]`.
#[macro_export]
#[doc(hidden)]
macro_rules! sql_args {
    ($($arg:expr),* $(,)?) => {
        &[$(&$arg as &dyn $crate::store::sql::ToValue),*] as &[&dyn $crate::store::sql::ToValue]
    };
}
pub use crate::sql_args as args;

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: Value) -> std::result::Result<Self, &'static str>;
}

impl FromValue for i64 {
    fn from_value(v: Value) -> std::result::Result<Self, &'static str> {
        match v {
            Value::Int(i) => Ok(i),
            _ => Err("an integer"),
        }
    }
}

impl FromValue for bool {
    fn from_value(v: Value) -> std::result::Result<Self, &'static str> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> std::result::Result<Self, &'static str> {
        match v {
            Value::Text(s) => Ok(s),
            _ => Err("text"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Value) -> std::result::Result<Self, &'static str> {
        match v {
            Value::Blob(b) => Ok(b),
            _ => Err("bytes"),
        }
    }
}

impl FromValue for Value {
    fn from_value(v: Value) -> std::result::Result<Self, &'static str> {
        Ok(v)
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> std::result::Result<Self, &'static str> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Clone, Debug)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i`, read as `T`; a column of another type is corrupt data.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).cloned().ok_or_else(|| StoreError::Corrupt(format!("no column {i} in the row")))?;
        T::from_value(v).map_err(|want| StoreError::Corrupt(format!("column {i} is not {want}")))
    }

    /// Every column, in order (copying whole tables).
    pub fn into_values(self) -> Vec<Value> {
        self.0
    }
}

/// Which database a connection talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection or transaction, as the table-family functions take it. Its statements are
/// async: on PostgreSQL they await the server; on SQLite they run at once, on the thread of
/// the store that owns the connection (see `store::sqlite`), never on the async runtime.
pub struct Conn<'a> {
    backend: Backend<'a>,
}

enum Backend<'a> {
    // Behind a mutex only so that a `Conn` can be shared by a future that is `Send`: the
    // connection is used by one thread at a time anyway (its owner's).
    Sqlite(&'a Mutex<rusqlite::Connection>),
    Postgres(&'a deadpool_postgres::ClientWrapper),
}

impl<'a> Conn<'a> {
    pub(super) fn sqlite(conn: &'a Mutex<rusqlite::Connection>) -> Self {
        Conn { backend: Backend::Sqlite(conn) }
    }

    pub(super) fn postgres(client: &'a deadpool_postgres::ClientWrapper) -> Self {
        Conn { backend: Backend::Postgres(client) }
    }

    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `sql` and returns every row.
    pub async fn query(&self, sql: &str, args: &[&dyn ToValue]) -> Result<Vec<Row>> {
        let values: Vec<Value> = args.iter().map(|a| a.to_value()).collect();
        match &self.backend {
            Backend::Sqlite(c) => sqlite_query(&c.lock().unwrap_or_else(PoisonError::into_inner), sql, values),
            Backend::Postgres(c) => Ok(super::postgres::query(c, sql, &values).await?.into_iter().map(Row).collect()),
        }
    }

    /// Runs `sql` and returns its first row, if any.
    pub async fn query_opt(&self, sql: &str, args: &[&dyn ToValue]) -> Result<Option<Row>> {
        Ok(self.query(sql, args).await?.into_iter().next())
    }

    /// Runs `sql`, which always returns a row (an aggregate, `EXISTS`).
    pub async fn query_one(&self, sql: &str, args: &[&dyn ToValue]) -> Result<Row> {
        self.query_opt(sql, args)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a query that always answers returned nothing".into()))
    }

    /// Runs `sql` and returns how many rows it changed.
    pub async fn execute(&self, sql: &str, args: &[&dyn ToValue]) -> Result<u64> {
        let values: Vec<Value> = args.iter().map(|a| a.to_value()).collect();
        match &self.backend {
            Backend::Sqlite(c) => {
                let conn = c.lock().unwrap_or_else(PoisonError::into_inner);
                let n =
                    conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(values.into_iter().map(to_sqlite)))?;
                Ok(n as u64)
            }
            Backend::Postgres(c) => super::postgres::execute(c, sql, &values).await,
        }
    }

    /// Prepares `sql` on PostgreSQL (once per connection: it is cached), so that running it
    /// later sends it at once, with no round trip to prepare it first. Nothing on SQLite.
    pub(super) async fn prepare(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(c) => super::postgres::prepare(c, sql).await,
        }
    }

    /// Runs several statements without arguments (migrations, savepoints).
    pub(super) async fn batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.lock().unwrap_or_else(PoisonError::into_inner).execute_batch(sql)?),
            Backend::Postgres(c) => Ok(c.batch_execute(sql).await?),
        }
    }
}

fn sqlite_query(c: &rusqlite::Connection, sql: &str, values: Vec<Value>) -> Result<Vec<Row>> {
    let mut stmt = c.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(values.into_iter().map(to_sqlite)))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(from_sqlite(row.get_ref(i)?));
        }
        out.push(Row(values));
    }
    Ok(out)
}

fn to_sqlite(v: Value) -> SqliteValue {
    match v {
        Value::Null => SqliteValue::Null,
        Value::Int(i) => SqliteValue::Integer(i),
        Value::Text(s) => SqliteValue::Text(s),
        Value::Blob(b) => SqliteValue::Blob(b),
    }
}

fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        // keyturn stores no floats; one read back is kept as its integer part.
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// `sql` with SQLite's `?N` placeholders written as PostgreSQL's `$N` (outside quotes).
pub(super) fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes_only() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
    }

    #[tokio::test]
    async fn sqlite_round_trip() {
        let c = Mutex::new(rusqlite::Connection::open_in_memory().expect("open"));
        let conn = Conn::sqlite(&c);
        conn.batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB)").await.expect("create");
        let none: Option<i64> = None;
        assert_eq!(
            conn.execute("INSERT INTO t VALUES (?1, ?2, ?3)", args![7i64, "x", vec![1u8, 2]]).await.expect("insert"),
            1
        );
        conn.execute("INSERT INTO t VALUES (?1, ?2, ?3)", args![none, none, none]).await.expect("insert nulls");
        let rows = conn.query("SELECT i, s, b FROM t ORDER BY i", args![]).await.expect("select");
        assert_eq!(rows[0].get::<Option<i64>>(0).expect("null"), None);
        assert_eq!(rows[1].get::<i64>(0).expect("int"), 7);
        assert_eq!(rows[1].get::<String>(1).expect("text"), "x");
        assert_eq!(rows[1].get::<Vec<u8>>(2).expect("blob"), vec![1, 2]);
        assert!(rows[1].get::<i64>(1).is_err(), "text is not an integer");
    }
}

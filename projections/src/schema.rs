//! One schema source per read-model table: the migrations (`migrations/<engine>/00NN_*.sql`).
//!
//! A fresh database gets its read-model tables from the migrations, and nothing else writes a
//! `CREATE` for them. When a rebuild needs a copy of a projection's tables beside the live ones,
//! the copy is made from the live tables *as the database reports them* — columns, constraints
//! and every index — so it is the migrations' schema, including whatever later migrations
//! changed, and a rebuilt table is indexed exactly like the one it replaces (ADR 0009).
//!
//! Index (and, on PostgreSQL, key constraint) names are global in a schema, and a table keeps
//! its index names when it is renamed. A copy's index is therefore named by alternation: the
//! live name plus the copy's suffix, or — when the live name already ends with it (the live
//! table is itself a swapped-in copy) — the live name without it. Every read-model index is
//! thus always named `<name>` or `<name>__rebuild`, with `<name>` from its migration.

use sqlx::{Any, AnyConnection, AnyPool, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("read model catalog: {0}")]
    Db(#[from] sqlx::Error),
    #[error("table {0} does not exist")]
    NoSuchTable(String),
    #[error("cannot read the definition {0:?}")]
    Unreadable(String),
}

/// The name a copy's index (or constraint) takes, given the live one's (see the module doc).
pub fn copy_index_name(live: &str, suffix: &str) -> String {
    match live.strip_suffix(suffix) {
        Some(base) if !base.is_empty() => base.to_owned(),
        _ => format!("{live}{suffix}"),
    }
}

/// The statements that create `<table><suffix>`: a copy of `table` as the database reports it,
/// with all its constraints and indexes.
pub async fn copy_statements(
    conn: &mut AnyConnection,
    table: &str,
    suffix: &str,
) -> Result<Vec<String>, SchemaError> {
    let copy = format!("{table}{suffix}");
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        sqlite_copy(conn, table, &copy, suffix).await
    } else {
        postgres_copy(conn, table, &copy, suffix).await
    }
}

/// Creates the `suffix`ed copy of every table in `tables` in one transaction.
pub async fn create_copies(
    pool: &AnyPool,
    tables: &[String],
    suffix: &str,
) -> Result<(), SchemaError> {
    // Read the catalog first: on SQLite a transaction that reads before it writes cannot
    // upgrade its lock while another connection writes (it fails at once instead of waiting).
    let mut statements = Vec::new();
    let mut conn = pool.acquire().await?;
    for table in tables {
        statements.extend(copy_statements(&mut conn, table, suffix).await?);
    }
    drop(conn);
    let mut tx = pool.begin().await?;
    for statement in statements {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// [`create_copies`] inside the caller's transaction, which must already have written (so that
/// on SQLite it holds the write lock before it reads the catalog).
pub async fn create_copies_in(
    tx: &mut Transaction<'static, Any>,
    tables: &[String],
    suffix: &str,
) -> Result<(), SchemaError> {
    for table in tables {
        for statement in copy_statements(tx, table, suffix).await? {
            sqlx::query(&statement).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// SQLite keeps each `CREATE` statement's text (rewritten on renames): the table's and its
/// indexes' are replayed with the names changed. Indexes of the primary key have no text; they
/// come with the table.
async fn sqlite_copy(
    conn: &mut AnyConnection,
    table: &str,
    copy: &str,
    suffix: &str,
) -> Result<Vec<String>, SchemaError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, sql FROM sqlite_master \
         WHERE tbl_name = $1 AND sql IS NOT NULL AND type IN ('table', 'index') \
         ORDER BY type DESC, name",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    if rows.first().map(|r| r.0.as_str()) != Some("table") {
        return Err(SchemaError::NoSuchTable(table.to_owned()));
    }
    rows.iter()
        .map(|(kind, sql)| {
            if kind == "table" {
                let (head, body) = split_head(sql)?;
                if !starts_with_words(head, &["CREATE", "TABLE"]) {
                    return Err(SchemaError::Unreadable(sql.clone()));
                }
                Ok(format!("CREATE TABLE {copy} {body}"))
            } else {
                rewrite_index(sql, copy, suffix)
            }
        })
        .collect()
}

/// PostgreSQL copies columns, defaults and checks with `LIKE`; key constraints and indexes are
/// re-created from their definitions so that they get the names the module doc describes.
async fn postgres_copy(
    conn: &mut AnyConnection,
    table: &str,
    copy: &str,
    suffix: &str,
) -> Result<Vec<String>, SchemaError> {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT ic.relname::TEXT, pg_get_indexdef(i.indexrelid), \
                con.conname::TEXT, pg_get_constraintdef(con.oid) \
         FROM pg_class t \
         JOIN pg_index i ON i.indrelid = t.oid \
         JOIN pg_class ic ON ic.oid = i.indexrelid \
         LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = t.oid \
         WHERE t.relname = $1 \
           AND t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
         ORDER BY ic.relname",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let exists: Option<(i64,)> = sqlx::query_as(
        "SELECT 1::BIGINT FROM pg_class \
         WHERE relname = $1 AND relkind = 'r' \
           AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await?;
    if exists.is_none() {
        return Err(SchemaError::NoSuchTable(table.to_owned()));
    }
    let mut statements = vec![format!(
        "CREATE TABLE {copy} (LIKE {table} INCLUDING ALL EXCLUDING INDEXES)"
    )];
    for (_, indexdef, constraint, constraintdef) in rows {
        statements.push(match (constraint, constraintdef) {
            (Some(name), Some(def)) => format!(
                "ALTER TABLE {copy} ADD CONSTRAINT {} {def}",
                copy_index_name(&name, suffix)
            ),
            _ => rewrite_index(&indexdef, copy, suffix)?,
        });
    }
    Ok(statements)
}

/// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] <name> ON <table> [USING <method>] (<columns>) …` with
/// the name and the table replaced.
fn rewrite_index(sql: &str, copy: &str, suffix: &str) -> Result<String, SchemaError> {
    let unreadable = || SchemaError::Unreadable(sql.to_owned());
    let (head, body) = split_head(sql)?;
    let words: Vec<&str> = head.split_whitespace().collect();
    let on = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("ON"))
        .ok_or_else(unreadable)?;
    if on < 3 || !starts_with_words(head, &["CREATE"]) {
        return Err(unreadable());
    }
    let unique = words[1].eq_ignore_ascii_case("UNIQUE");
    let name = words[on - 1].trim_matches('"');
    // What follows the table name before the column list (PostgreSQL: `USING btree`).
    let method = words.get(on + 2..).unwrap_or_default().join(" ");
    let unique = if unique { "UNIQUE " } else { "" };
    let index = copy_index_name(name, suffix);
    let mut out = format!("CREATE {unique}INDEX {index} ON {copy} ");
    if !method.is_empty() {
        out.push_str(&method);
        out.push(' ');
    }
    out.push_str(body);
    Ok(out)
}

/// Splits a `CREATE` statement at its first `(`: (head, rest from the parenthesis on).
fn split_head(sql: &str) -> Result<(&str, &str), SchemaError> {
    let at = sql
        .find('(')
        .ok_or_else(|| SchemaError::Unreadable(sql.to_owned()))?;
    Ok(sql.split_at(at))
}

fn starts_with_words(head: &str, words: &[&str]) -> bool {
    let mut found = head.split_whitespace();
    words
        .iter()
        .all(|w| found.next().is_some_and(|f| f.eq_ignore_ascii_case(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_alternate() {
        assert_eq!(
            copy_index_name("posts_author_idx", "__rebuild"),
            "posts_author_idx__rebuild"
        );
        assert_eq!(
            copy_index_name("posts_author_idx__rebuild", "__rebuild"),
            "posts_author_idx"
        );
        assert_eq!(
            copy_index_name("__rebuild", "__rebuild"),
            "__rebuild__rebuild"
        );
    }

    #[test]
    fn indexes_are_rewritten_with_their_body_intact() {
        assert_eq!(
            rewrite_index(
                "CREATE INDEX feed_authors_pulled_idx ON feed_authors (author_id) WHERE pulled = 1",
                "feed_authors__rebuild",
                "__rebuild"
            )
            .unwrap(),
            "CREATE INDEX feed_authors_pulled_idx__rebuild ON feed_authors__rebuild \
             (author_id) WHERE pulled = 1"
        );
        // SQLite's text after a rename; PostgreSQL's `pg_get_indexdef`.
        assert_eq!(
            rewrite_index(
                "CREATE UNIQUE INDEX x__rebuild ON \"t\" (a, b)",
                "t__rebuild",
                "__rebuild"
            )
            .unwrap(),
            "CREATE UNIQUE INDEX x ON t__rebuild (a, b)"
        );
        assert_eq!(
            rewrite_index(
                "CREATE INDEX x ON public.t USING btree (a, b)",
                "t__rebuild",
                "__rebuild"
            )
            .unwrap(),
            "CREATE INDEX x__rebuild ON t__rebuild USING btree (a, b)"
        );
        assert!(rewrite_index("CREATE INDEX x", "t", "__r").is_err());
    }
}

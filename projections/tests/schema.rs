//! A read model's schema has one source, its migration; a rebuild copies the live tables as the
//! database reports them (`nova_projections::schema`, ADR 0009). These tests hold that to
//! account on both engines: after rebuilds the read model has exactly the schema a fresh
//! database gets from the migrations — columns, keys and every index (names aside) — and the
//! comparison itself notices a missing index. The read-model migrations are one text for both
//! engines, and each projection's tables come from them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use nova_infra::db::Engine;
use nova_infra::on_both_backends;
use nova_infra::testing::TestDb;
use nova_projections::rebuild::{self, SUFFIX};
use nova_projections::Checkpoints;
use sqlx::AnyPool;

on_both_backends!(rebuilt_tables_have_the_migrated_schema);
on_both_backends!(a_copy_without_an_index_is_told_apart);
on_both_backends!(copies_have_every_index_of_the_live_table);

/// (column, type, nullable, part of the primary key) in declaration order.
type Column = (String, String, bool, bool);

/// Everything about a table that queries and plans depend on, without names: its columns and
/// its indexes (kind, uniqueness, columns or expression, predicate), sorted.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    columns: Vec<Column>,
    indexes: BTreeSet<String>,
}

async fn columns(engine: Engine, pool: &AnyPool, table: &str) -> Vec<Column> {
    match engine {
        Engine::Sqlite => {
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .unwrap();
            rows.into_iter()
                .map(|(n, t, nn, pk)| (n, t.to_uppercase(), nn == 0, pk > 0))
                .collect()
        }
        Engine::Postgres => {
            let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                "SELECT c.column_name::TEXT, c.data_type::TEXT, c.is_nullable::TEXT, \
                        (SELECT COUNT(*) FROM information_schema.key_column_usage k \
                           JOIN information_schema.table_constraints tc \
                             ON tc.constraint_name = k.constraint_name \
                            AND tc.table_name = k.table_name \
                          WHERE tc.constraint_type = 'PRIMARY KEY' \
                            AND k.table_name = c.table_name \
                            AND k.column_name = c.column_name)::BIGINT \
                 FROM information_schema.columns c \
                 WHERE c.table_schema = current_schema() AND c.table_name = $1 \
                 ORDER BY c.ordinal_position",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .unwrap();
            rows.into_iter()
                .map(|(n, t, nullable, pk)| (n, t.to_uppercase(), nullable == "YES", pk > 0))
                .collect()
        }
    }
}

async fn indexes(engine: Engine, pool: &AnyPool, table: &str) -> BTreeSet<String> {
    match engine {
        Engine::Sqlite => {
            let list: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT name, \"unique\", origin FROM pragma_index_list($1) ORDER BY name",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .unwrap();
            let mut out = BTreeSet::new();
            for (name, unique, origin) in list {
                let cols: Vec<(Option<String>,)> =
                    sqlx::query_as("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                        .bind(&name)
                        .fetch_all(pool)
                        .await
                        .unwrap();
                let cols: Vec<String> = cols
                    .into_iter()
                    .map(|(c,)| c.unwrap_or_else(|| "<expr>".into()))
                    .collect();
                let sql: Option<(Option<String>,)> = sqlx::query_as(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = $1",
                )
                .bind(&name)
                .fetch_optional(pool)
                .await
                .unwrap();
                let sql = sql.and_then(|s| s.0).unwrap_or_default();
                let predicate = sql
                    .to_uppercase()
                    .rfind(" WHERE ")
                    .map(|at| sql[at..].trim().to_owned())
                    .unwrap_or_default();
                out.insert(format!(
                    "{origin} unique={unique} ({}) {predicate}",
                    cols.join(", ")
                ));
            }
            out
        }
        Engine::Postgres => {
            let list: Vec<(bool, bool, String)> = sqlx::query_as(
                "SELECT i.indisprimary, i.indisunique, pg_get_indexdef(i.indexrelid) \
                 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
                 WHERE t.relname = $1 \
                   AND t.relnamespace = (SELECT oid FROM pg_namespace \
                                          WHERE nspname = current_schema())",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .unwrap();
            list.into_iter()
                .map(|(primary, unique, def)| {
                    // `CREATE INDEX <name> ON <table> USING …`: the name and table go.
                    let body = def.split_once(" USING ").map(|(_, b)| b).unwrap_or(&def);
                    format!("primary={primary} unique={unique} {body}")
                })
                .collect()
        }
    }
}

async fn shape(engine: Engine, pool: &AnyPool, table: &str) -> Shape {
    Shape {
        columns: columns(engine, pool, table).await,
        indexes: indexes(engine, pool, table).await,
    }
}

/// The schema of every read-model table, by live name.
async fn read_model(engine: Engine, pool: &AnyPool) -> Vec<(String, Shape)> {
    let mut out = Vec::new();
    for projection in nova_projections::all() {
        let tables = projection.tables();
        assert!(
            !tables.is_empty(),
            "{} lists no tables, so it cannot be rebuilt",
            projection.name()
        );
        for table in tables {
            let s = shape(engine, pool, &table).await;
            assert!(
                !s.columns.is_empty(),
                "{table}: no such table after migrations"
            );
            out.push((table, s));
        }
    }
    out
}

async fn rebuilt_tables_have_the_migrated_schema(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let migrated = read_model(engine, &db.any).await;
    // Twice: the second rebuild copies tables that are themselves swapped-in copies (their
    // index names alternate, see `nova_projections::schema`).
    for round in 1..=2 {
        for projection in nova_projections::all() {
            rebuild::rebuild(
                projection,
                &db.store,
                &db.any,
                &Checkpoints::default(),
                |_| {},
            )
            .await
            .unwrap();
        }
        let rebuilt = read_model(engine, &db.any).await;
        for ((table, before), (_, after)) in migrated.iter().zip(&rebuilt) {
            assert_eq!(
                before, after,
                "{table} after rebuild {round} differs from its migration"
            );
        }
    }
    db.close().await;
}

async fn copies_have_every_index_of_the_live_table(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    for projection in nova_projections::all() {
        let tables = projection.tables();
        nova_projections::schema::create_copies(&db.any, &tables, SUFFIX)
            .await
            .unwrap();
        for table in &tables {
            let live = shape(engine, &db.any, table).await;
            let copy = shape(engine, &db.any, &format!("{table}{SUFFIX}")).await;
            assert_eq!(live, copy, "{table}{SUFFIX} is not a copy of {table}");
        }
    }
    db.close().await;
}

/// The comparison above is only worth something if it sees indexes: drop one from a copy and
/// it must notice.
async fn a_copy_without_an_index_is_told_apart(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let tables = vec!["posts".to_owned()];
    nova_projections::schema::create_copies(&db.any, &tables, "__check")
        .await
        .unwrap();
    assert_eq!(
        shape(engine, &db.any, "posts").await,
        shape(engine, &db.any, "posts__check").await
    );
    sqlx::query("DROP INDEX posts_author_idx__check")
        .execute(&db.any)
        .await
        .unwrap();
    assert_ne!(
        shape(engine, &db.any, "posts").await,
        shape(engine, &db.any, "posts__check").await,
        "a copy lacking posts_author_idx passed for the live table"
    );
    db.close().await;
}

/// The read-model migrations are one text for both engines (their SQL is the common dialect),
/// so the two directories cannot drift apart; and every table a projection lists is created
/// by one of them.
#[test]
fn read_model_migrations_are_one_text_for_both_engines() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let tables: Vec<String> = nova_projections::all()
        .iter()
        .flat_map(|p| p.tables())
        .collect();
    let mut created = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(root.join("postgres"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    for file in files {
        let pg = std::fs::read_to_string(root.join("postgres").join(&file)).unwrap();
        // The SQL without comments, as words.
        let words: Vec<&str> = pg
            .lines()
            .map(|l| l.split("--").next().unwrap_or_default())
            .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
            .filter(|w| !w.is_empty())
            .collect();
        let touched = words.iter().any(|w| tables.iter().any(|t| t == w));
        if !touched {
            continue;
        }
        let sqlite = std::fs::read_to_string(root.join("sqlite").join(&file))
            .unwrap_or_else(|_| panic!("migrations/sqlite/{file} is missing"));
        assert_eq!(
            pg, sqlite,
            "migrations/{{postgres,sqlite}}/{file} touch read-model tables and must be one text"
        );
        for w in words.windows(3) {
            if w[0].eq_ignore_ascii_case("CREATE") && w[1].eq_ignore_ascii_case("TABLE") {
                created.insert(w[2].to_owned());
            }
        }
    }
    for table in &tables {
        assert!(created.contains(table), "no migration creates {table}");
    }
}

//! A rebuild builds a projection's copy from `Projection::ddl`, while the live tables come from
//! the migrations. The two must never drift: after a rebuild swaps the copy in, the read model
//! has to have exactly the schema the queries (and the next migration) expect. This test
//! compares them, column by column, for every projection Nova runs.

use nova_infra::db::Engine;
use nova_infra::on_both_backends;
use nova_infra::testing::TestDb;
use sqlx::AnyPool;

on_both_backends!(rebuild_ddl_matches_migrations);

/// (column, type, nullable, part of the primary key) in declaration order.
type Column = (String, String, bool, bool);

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

async fn rebuild_ddl_matches_migrations(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let suffix = "__ddl_check";
    for projection in nova_projections::all() {
        let tables = projection.tables();
        assert!(
            !tables.is_empty(),
            "{} lists no tables, so it cannot be rebuilt",
            projection.name()
        );
        for statement in projection.ddl(suffix) {
            sqlx::query(&statement).execute(&db.any).await.unwrap();
        }
        for table in &tables {
            let live = columns(engine, &db.any, table).await;
            let copy = columns(engine, &db.any, &format!("{table}{suffix}")).await;
            assert!(!live.is_empty(), "{table}: no such table after migrations");
            assert_eq!(
                live,
                copy,
                "{}: `ddl()` of {table} differs from its migration",
                projection.name()
            );
        }
    }
    db.close().await;
}

//! cqrs-es with postgres-es (`postgres_cqrs` = `CqrsFramework` over a `PersistedEventStore`
//! over a `PostgresEventRepository`, event-sourced, no snapshots, no queries).
//!
//! postgres-es keeps every aggregate type in one `events` table that the user must create.
//! `CqrsFramework::execute` always loads the aggregate first (all its events, ordered by
//! `sequence`), runs the command, then inserts the new events in one transaction with
//! `sequence = last loaded sequence + 1, + 2, ...`; the primary key
//! `(aggregate_type, aggregate_id, sequence)` turns a concurrent writer into an
//! `AggregateConflict`.

use std::sync::Arc;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use postgres_es::{postgres_cqrs, PostgresCqrs, PostgresEventRepository};
use sqlx::PgPool;
use uuid::Uuid;

use crate::account::{Account, AccountCommand, AGGREGATE_NAME, EVENT_VERSION};
use crate::driver::{self, Outcome};
use crate::RunSpec;

/// The `events` table exactly as postgres-es 0.5.0 ships it in `db/init.sql` (the snapshot and
/// view tables there are not needed: no snapshots, no queries).
const EVENTS_DDL: &str = "\
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";

/// Columns (name, type) of that table, to recognise it on a repeated run.
const EVENTS_COLUMNS: [(&str, &str); 7] = [
    ("aggregate_type", "text"),
    ("aggregate_id", "text"),
    ("sequence", "bigint"),
    ("event_type", "text"),
    ("event_version", "text"),
    ("payload", "json"),
    ("metadata", "json"),
];

/// Creates the `events` table if missing (or checks that an existing one is postgres-es's), and
/// empties it.
async fn setup(pool: &PgPool) -> Result<Arc<PostgresCqrs<Account>>, String> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'events' \
         ORDER BY ordinal_position",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| format!("cqrs-es: inspecting the events table failed: {e}"))?;
    if columns.is_empty() {
        sqlx::query(EVENTS_DDL)
            .execute(pool)
            .await
            .map_err(|e| format!("cqrs-es: creating the events table failed: {e}"))?;
    } else {
        let matches = columns.len() == EVENTS_COLUMNS.len()
            && columns
                .iter()
                .zip(EVENTS_COLUMNS)
                .all(|((name, ty), (want_name, want_ty))| name == want_name && ty == want_ty);
        if !matches {
            return Err(format!(
                "cqrs-es: a table named events already exists with columns {columns:?}, which is \
                 not postgres-es's schema; pass a dedicated database"
            ));
        }
        sqlx::query("TRUNCATE events")
            .execute(pool)
            .await
            .map_err(|e| format!("cqrs-es: emptying the events table failed: {e}"))?;
    }
    Ok(Arc::new(postgres_cqrs(pool.clone(), vec![], ())))
}

/// Scenario `new`: every operation opens a brand-new aggregate.
pub async fn run_new(pool: &PgPool, spec: &RunSpec) -> Result<Outcome, String> {
    let cqrs = setup(pool).await?;
    eprintln!("cqrs-es: events table ready; running");
    driver::run(spec.writers, spec.warmup, spec.duration, move |_writer| {
        let cqrs = Arc::clone(&cqrs);
        async move {
            let id = Uuid::now_v7().to_string();
            cqrs.execute(&id, AccountCommand::Open)
                .await
                .map_err(|e| format!("cqrs-es: Open on {id} failed: {e}"))
        }
    })
    .await
}

/// Scenario `history`: each writer touches its own aggregate, pre-filled with `history` events.
pub async fn run_history(pool: &PgPool, spec: &RunSpec, history: u32) -> Result<Outcome, String> {
    let cqrs = setup(pool).await?;
    let ids: Vec<String> = (0..spec.writers)
        .map(|_| Uuid::now_v7().to_string())
        .collect();
    eprintln!(
        "cqrs-es: filling {} aggregates with {history} events each",
        ids.len()
    );
    fill(pool, &ids, history).await?;
    verify(pool, &ids, history).await?;
    eprintln!("cqrs-es: history verified through PersistedEventStore::load_aggregate; running");

    let ids = Arc::new(ids);
    driver::run(spec.writers, spec.warmup, spec.duration, move |writer| {
        let cqrs = Arc::clone(&cqrs);
        let ids = Arc::clone(&ids);
        async move {
            let id = ids.get(writer).ok_or("no aggregate for writer")?;
            cqrs.execute(id, AccountCommand::Touch)
                .await
                .map_err(|e| format!("cqrs-es: Touch on {id} failed: {e}"))
        }
    })
    .await
}

/// Writes `history` events per aggregate with one `INSERT ... SELECT` each, in the row format of
/// postgres-es's own insert: `aggregate_type` = `Aggregate::TYPE`, `sequence` 1..=history,
/// `event_type`/`event_version` from `DomainEvent`, and the payload and metadata (an empty map)
/// as serde JSON. postgres-es binds those as `serde_json::Value`, which sqlx sends as `jsonb`,
/// so the `json` columns hold jsonb's text form; the fill builds jsonb and casts it the same way.
async fn fill(pool: &PgPool, ids: &[String], history: u32) -> Result<(), String> {
    let sql = "INSERT INTO events \
               (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
               SELECT $1, $2, g, \
                      CASE WHEN g = 1 THEN 'Opened' ELSE 'Touched' END, \
                      $3, \
                      (CASE WHEN g = 1 THEN '\"Opened\"'::jsonb \
                            ELSE jsonb_build_object('Touched', jsonb_build_object('n', g - 1)) \
                       END)::json, \
                      '{}'::jsonb::json \
               FROM generate_series(1::bigint, $4::bigint) AS g";
    for id in ids {
        sqlx::query(sql)
            .bind(AGGREGATE_NAME)
            .bind(id)
            .bind(EVENT_VERSION)
            .bind(i64::from(history))
            .execute(pool)
            .await
            .map_err(|e| format!("cqrs-es: filling history of {id} failed: {e}"))?;
    }
    sqlx::query("ANALYZE events")
        .execute(pool)
        .await
        .map_err(|e| format!("cqrs-es: ANALYZE events failed: {e}"))?;
    Ok(())
}

/// Counts the filled rows, then loads the first aggregate through the library's event store and
/// checks the folded state.
async fn verify(pool: &PgPool, ids: &[String], history: u32) -> Result<(), String> {
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = ANY($2)",
    )
    .bind(AGGREGATE_NAME)
    .bind(ids)
    .fetch_one(pool)
    .await
    .map_err(|e| format!("cqrs-es: counting filled events failed: {e}"))?;
    let expected_rows = ids.len() as i64 * i64::from(history);
    if rows != expected_rows {
        return Err(format!(
            "cqrs-es: fill wrote {rows} events, expected {expected_rows}"
        ));
    }

    let Some(id) = ids.first() else {
        return Ok(());
    };
    let store: PersistedEventStore<PostgresEventRepository, Account> =
        PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
    let context = store
        .load_aggregate(id)
        .await
        .map_err(|e| format!("cqrs-es: loading filled aggregate {id} failed: {e}"))?;
    let expected = Account {
        exists: true,
        count: u64::from(history) - 1,
    };
    if context.aggregate != expected || context.current_sequence as u64 != u64::from(history) {
        return Err(format!(
            "cqrs-es: filled aggregate {id} loads as {:?} at sequence {}, expected {expected:?} \
             at sequence {history}",
            context.aggregate, context.current_sequence
        ));
    }
    Ok(())
}

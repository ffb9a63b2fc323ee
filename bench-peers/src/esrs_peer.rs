//! esrs (`PgStore` + `AggregateManager`).
//!
//! esrs keeps one table per aggregate type, `{NAME}_events`, created by the migrations that
//! `PgStoreBuilder::try_build` runs. A command goes through `AggregateManager::handle_command`,
//! whose `PgStore::persist` inserts each event in its own transaction; a new aggregate starts
//! from a fresh `AggregateState`, an existing one is loaded with `AggregateManager::load`
//! (optimistic: the unique index on `(aggregate_id, sequence_number)` rejects a concurrent
//! writer; `lock_and_load`, which takes a Postgres advisory lock, is not used).

use std::sync::Arc;

use esrs::manager::AggregateManager;
use esrs::store::postgres::{PgStore, PgStoreBuilder};
use esrs::AggregateState;
use sqlx::PgPool;
use uuid::Uuid;

use crate::account::{Account, AccountCommand, EsrsAccount};
use crate::driver::{self, Outcome};
use crate::RunSpec;

type Manager = AggregateManager<PgStore<EsrsAccount>>;

/// Builds the store (running esrs's own migrations) and empties its table.
async fn setup(pool: &PgPool) -> Result<(Arc<Manager>, String), String> {
    let store: PgStore<EsrsAccount> = PgStoreBuilder::<EsrsAccount>::new(pool.clone())
        .try_build()
        .await
        .map_err(|e| format!("esrs: building the PgStore (migrations) failed: {e}"))?;
    let table = store.table_name().to_string();
    sqlx::query(&format!("TRUNCATE {table}"))
        .execute(pool)
        .await
        .map_err(|e| format!("esrs: emptying {table} failed: {e}"))?;
    Ok((Arc::new(AggregateManager::new(store)), table))
}

/// Scenario `new`: every operation opens a brand-new aggregate.
pub async fn run_new(pool: &PgPool, spec: &RunSpec) -> Result<Outcome, String> {
    let (manager, _) = setup(pool).await?;
    eprintln!("esrs: store ready; running");
    driver::run(spec.writers, spec.warmup, spec.duration, move |_writer| {
        let manager = Arc::clone(&manager);
        async move {
            let id = Uuid::now_v7();
            match manager
                .handle_command(AggregateState::with_id(id), AccountCommand::Open)
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(refused)) => Err(format!("esrs refused Open on {id}: {refused}")),
                Err(err) => Err(format!("esrs failed to persist Opened on {id}: {err}")),
            }
        }
    })
    .await
}

/// Scenario `history`: each writer touches its own aggregate, pre-filled with `history` events.
pub async fn run_history(pool: &PgPool, spec: &RunSpec, history: u32) -> Result<Outcome, String> {
    let (manager, table) = setup(pool).await?;
    let ids: Vec<Uuid> = (0..spec.writers).map(|_| Uuid::now_v7()).collect();
    eprintln!(
        "esrs: filling {} aggregates with {history} events each",
        ids.len()
    );
    fill(pool, &table, &ids, history).await?;
    verify(pool, &table, &manager, &ids, history).await?;
    eprintln!("esrs: history verified through AggregateManager::load; running");

    let ids = Arc::new(ids);
    driver::run(spec.writers, spec.warmup, spec.duration, move |writer| {
        let manager = Arc::clone(&manager);
        let ids = Arc::clone(&ids);
        async move {
            let id = ids.get(writer).copied().ok_or("no aggregate for writer")?;
            let state = manager
                .load(id)
                .await
                .map_err(|e| format!("esrs failed to load {id}: {e}"))?
                .ok_or_else(|| format!("esrs found no events for {id}"))?;
            match manager.handle_command(state, AccountCommand::Touch).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(refused)) => Err(format!("esrs refused Touch on {id}: {refused}")),
                Err(err) => Err(format!("esrs failed to persist Touched on {id}: {err}")),
            }
        }
    })
    .await
}

/// Writes `history` events per aggregate with one `INSERT ... SELECT` each, in the row format of
/// esrs's own insert (`insert.sql`: id, aggregate_id, payload, occurred_on, sequence_number,
/// version): a random (v4, esrs's default) event id, the serde JSON of the event as `jsonb`,
/// sequence numbers 1..=history, and a NULL version (esrs binds NULL without `upcasting`).
async fn fill(pool: &PgPool, table: &str, ids: &[Uuid], history: u32) -> Result<(), String> {
    let history = i32::try_from(history).map_err(|_| "history does not fit esrs's INT sequence")?;
    let sql = format!(
        "INSERT INTO {table} (id, aggregate_id, payload, occurred_on, sequence_number, version) \
         SELECT gen_random_uuid(), $1, \
                CASE WHEN g = 1 THEN '\"Opened\"'::jsonb \
                     ELSE jsonb_build_object('Touched', jsonb_build_object('n', g - 1)) END, \
                now(), g, NULL \
         FROM generate_series(1, $2::int) AS g"
    );
    for id in ids {
        sqlx::query(&sql)
            .bind(id)
            .bind(history)
            .execute(pool)
            .await
            .map_err(|e| format!("esrs: filling history of {id} failed: {e}"))?;
    }
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(pool)
        .await
        .map_err(|e| format!("esrs: ANALYZE {table} failed: {e}"))?;
    Ok(())
}

/// Counts the filled rows, then loads the first aggregate through the library and checks the
/// folded state.
async fn verify(
    pool: &PgPool,
    table: &str,
    manager: &Manager,
    ids: &[Uuid],
    history: u32,
) -> Result<(), String> {
    let rows: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE aggregate_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_one(pool)
    .await
    .map_err(|e| format!("esrs: counting filled events failed: {e}"))?;
    let expected_rows = ids.len() as i64 * i64::from(history);
    if rows != expected_rows {
        return Err(format!(
            "esrs: fill wrote {rows} events, expected {expected_rows}"
        ));
    }
    let Some(&id) = ids.first() else {
        return Ok(());
    };
    let state = manager
        .load(id)
        .await
        .map_err(|e| format!("esrs: loading filled aggregate {id} failed: {e}"))?
        .ok_or_else(|| format!("esrs: filled aggregate {id} has no events"))?;
    let expected = Account {
        exists: true,
        count: u64::from(history) - 1,
    };
    if *state.inner() != expected || i64::from(*state.sequence_number()) != i64::from(history) {
        return Err(format!(
            "esrs: filled aggregate {id} loads as {:?} at sequence {}, expected {expected:?} at \
             sequence {history}",
            state.inner(),
            state.sequence_number()
        ));
    }
    Ok(())
}

//! esrs's `AggregateManager` running Nova's user aggregate on Nova's store, on both engines.

use chrono::{TimeZone, Utc};
use esrs::manager::AggregateManager;
use esrs::AggregateState;
use nova_aggregates::user::{User, UserCommand, UserError};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::Engine;
use nova_infra::on_both_backends;
use nova_infra::store::esrs_adapter::EsrsStore;
use nova_infra::store::StoreError;
use nova_infra::testing::TestDb;
use uuid::Uuid;

on_both_backends!(aggregate_manager_runs_on_nova_store);

async fn aggregate_manager_runs_on_nova_store(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let meta = EventMetadata {
        correlation_id: Uuid::now_v7(),
        request_id: Some("esrs".into()),
        ..Default::default()
    };
    let manager = AggregateManager::new(EsrsStore::<User>::new(db.store.clone(), meta.clone()));
    let id = Uuid::now_v7();
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();

    let state = manager
        .handle_command(
            AggregateState::with_id(id),
            UserCommand::Register {
                user_id: id,
                username: "esrs_user".into(),
                display_name: None,
                credential_id: Uuid::now_v7(),
                now,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.username, "esrs_user");

    let loaded = manager.load(id).await.unwrap().unwrap();
    assert_eq!(*loaded.sequence_number(), 1);
    let stale = manager.load(id).await.unwrap().unwrap();
    let state = manager
        .handle_command(
            loaded,
            UserCommand::UpdateProfile {
                display_name: Some(Some("E".into())),
                status: None,
                profile_picture_url: None,
                now,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.display_name.as_deref(), Some("E"));

    // A domain refusal stays a domain refusal.
    let loaded = manager.load(id).await.unwrap().unwrap();
    let refused = manager
        .handle_command(
            loaded,
            UserCommand::Register {
                user_id: id,
                username: "again".into(),
                display_name: None,
                credential_id: Uuid::now_v7(),
                now,
            },
        )
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err(), UserError::AlreadyRegistered);

    // A stale state is a typed conflict, not a raw database error.
    let conflict = manager
        .handle_command(
            stale,
            UserCommand::UpdateProfile {
                display_name: Some(Some("stale".into())),
                status: None,
                profile_picture_url: None,
                now,
            },
        )
        .await;
    assert!(matches!(
        conflict,
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        })
    ));

    // Locking works within the process and releases on drop.
    {
        let locked = manager.lock_and_load(id).await.unwrap();
        assert!(locked.is_some());
    }
    let _again = manager.lock_and_load(id).await.unwrap();

    // History is immutable.
    assert!(matches!(
        manager.delete(id).await,
        Err(StoreError::Invalid(_))
    ));
    let events = db.store.load(Domain::User, id, 0).await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.metadata == meta));
    db.close().await;
}

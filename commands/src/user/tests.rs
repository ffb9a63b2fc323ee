//! Unit tests of the user module that need its writer.
//!
//! The repository's state cache never serves a stale state: another process's appends (a
//! second repository on the same database) are always folded in.

use chrono::Utc;
use nova_aggregates::user::{User, UserCommand, UserError};
use nova_infra::testing::TestDb;
use uuid::Uuid;

use super::UserWriter;
use crate::{CommandContext, CommandStore, Repository};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_state_includes_other_writers_events() {
    let t = TestDb::sqlite();
    let db = t.open().await;
    let store = CommandStore::new(db.store.clone());
    let here: Repository<User> = Repository::new(&store, UserWriter(()));
    let elsewhere: Repository<User> = Repository::new(&store, UserWriter(()));
    let ctx = CommandContext::new(None, None);
    let id = Uuid::now_v7();
    here.execute(id, &ctx, |_| {
        Ok(UserCommand::Register {
            user_id: id,
            username: "cache_me".into(),
            display_name: None,
            credential_id: Uuid::now_v7(),
            now: Utc::now(),
        })
    })
    .await
    .unwrap();
    // Warm this repository's cache.
    assert_eq!(here.load(id).await.unwrap().version, 1);
    // Another process changes the user.
    elsewhere
        .execute(id, &ctx, |_| {
            Ok(UserCommand::UpdateProfile {
                display_name: Some(Some("Changed".into())),
                status: None,
                profile_picture_url: None,
                now: Utc::now(),
            })
        })
        .await
        .unwrap();
    let loaded = here.load(id).await.unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state.display_name.as_deref(), Some("Changed"));
    // A stale decision is impossible: this repository's next command sees version 2.
    let done = here
        .execute(id, &ctx, |_| {
            Ok(UserCommand::UpdateProfile {
                display_name: None,
                status: Some(Some("s".into())),
                profile_picture_url: None,
                now: Utc::now(),
            })
        })
        .await
        .unwrap();
    assert_eq!(done.version, 3);
    assert_eq!(done.state.display_name.as_deref(), Some("Changed"));
    // A fresh repository (cold cache) agrees with the warm one.
    let cold: Repository<User> = Repository::new(&store, UserWriter(()));
    let a = cold.load(id).await.unwrap();
    let b = here.load(id).await.unwrap();
    assert_eq!(
        (a.state, a.version, a.last_position),
        (b.state, b.version, b.last_position)
    );
    db.close().await;
}

/// The read marker points at a notification the view must already list: one it does not
/// (yet) list is not found, and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_marker_on_a_notification_not_yet_in_the_view_is_not_found() {
    use std::sync::Arc;

    use nova_event_schemas::Domain;

    use super::notifications::{NotificationCommandError, NotificationCommands};
    use crate::facts::fake::NoNotifications;

    let t = TestDb::sqlite();
    let db = t.open().await;
    let store = CommandStore::new(db.store.clone());
    let commands = NotificationCommands::new(store.clone(), Arc::new(NoNotifications));
    let ctx = CommandContext::new(None, None);
    let refused = commands
        .mark_read(&ctx, Uuid::now_v7(), Uuid::now_v7())
        .await;
    assert!(
        matches!(
            refused,
            Err(NotificationCommandError::Refused(
                UserError::NotificationNotFound
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(store.head(Domain::User).await.unwrap(), 0);
    db.close().await;
}

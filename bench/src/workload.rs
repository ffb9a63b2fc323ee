//! The events the delivery scenarios move: `user.registered`, each on its own user aggregate at
//! expected version 0, with a unique user id and username — what a burst of sign-ups writes.

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use nova_event_schemas::user::{Registered, UserEvent};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::store::{EventStore, ReadFilter, RecordedEvent};
use uuid::Uuid;

use crate::harness::count_bar;
use crate::Error;

/// Appends in flight while pre-appending, so the store's group commit gathers them.
const PRE_APPEND_CONCURRENCY: usize = 64;

/// A new user's registration.
pub fn registered() -> (Uuid, UserEvent) {
    let user_id = Uuid::now_v7();
    let tag = user_id.simple().to_string();
    let event = UserEvent::Registered(Registered {
        user_id,
        username: format!("bench_{tag}"),
        display_name: Some(format!("Bench User {}", &tag[20..])),
        credential_id: Uuid::now_v7(),
        registered_at: Utc::now(),
    });
    (user_id, event)
}

/// Appends one registration to a new aggregate; returns its position.
pub async fn append_registered(store: &EventStore) -> Result<i64, Error> {
    let (user_id, event) = registered();
    let metadata = EventMetadata {
        correlation_id: Uuid::now_v7(),
        ..EventMetadata::default()
    };
    let appended = store
        .append(vec![(user_id, "user", 0, vec![event])], metadata)
        .await?;
    Ok(appended.last_position)
}

/// Appends `n` registrations (concurrently, untimed); returns the user domain's head.
pub async fn pre_append(
    store: &EventStore,
    n: u64,
    label: &str,
    progress: bool,
) -> Result<i64, Error> {
    let bar = count_bar(label, n, progress);
    futures::stream::iter(0..n)
        .map(|_| append_registered(store))
        .buffer_unordered(PRE_APPEND_CONCURRENCY)
        .try_for_each(|_| {
            bar.inc(1);
            futures::future::ready(Ok(()))
        })
        .await
        .map_err(|e| format!("{label}: {e}"))?;
    bar.finish_and_clear();
    Ok(store.head(Domain::User).await?)
}

/// Every event of the user domain, in position order.
pub async fn read_all(store: &EventStore) -> Result<Vec<RecordedEvent>, Error> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let page = store
            .read(
                Domain::User,
                &ReadFilter {
                    after_position: out.last().map_or(0, |e| e.position),
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

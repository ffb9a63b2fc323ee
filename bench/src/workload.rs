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
    let appends = futures::stream::iter(0..n).map(|_| async {
        append_registered(store).await?;
        Ok(1)
    });
    fill_untimed(appends, n, PRE_APPEND_CONCURRENCY, label, progress)
        .await
        .map_err(|e| format!("{label}: {e}"))?;
    Ok(store.head(Domain::User).await?)
}

/// Runs the writes of a benchmark's untimed fill, `concurrency` at a time, behind a progress
/// bar of `total`; each answers how many it wrote.
pub async fn fill_untimed<W>(
    writes: impl futures::Stream<Item = W>,
    total: u64,
    concurrency: usize,
    label: &str,
    progress: bool,
) -> Result<(), Error>
where
    W: std::future::Future<Output = Result<u64, Error>>,
{
    let bar = count_bar(label, total, progress);
    writes
        .buffer_unordered(concurrency)
        .try_for_each(|written| {
            bar.inc(written);
            futures::future::ready(Ok(()))
        })
        .await?;
    bar.finish_and_clear();
    Ok(())
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

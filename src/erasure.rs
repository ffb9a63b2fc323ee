//! Erasure of a person's personal data (ADR 0025), as the HTTP route
//! (`POST /v1/admin/users/{id}/erase`) and the CLI (`nova admin erase-user`) run it.
//!
//! The user domain does the erasure proper (`UserCommands::erase`: the data key is destroyed,
//! then `user.erased` is appended). The views drop what they derived from the person when they
//! apply that event; this module then waits (bounded) until every view has, and scrubs the
//! database files (SQLite: `VACUUM`, then the write-ahead log truncated) so that the deleted
//! bytes do not linger in free pages or in the log.

use std::time::{Duration, Instant};

use nova_commands::user::{UserCommandError, UserCommands};
use nova_commands::CommandContext;
use nova_event_schemas::Domain;
use nova_infra::db::Database;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// How long an erasure waits for the views before it answers without the scrub.
pub const VIEWS_WAIT: Duration = Duration::from_secs(10);

/// What an erasure did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErasureReport {
    pub user_id: Uuid,
    /// Always true once answered: the person's data key no longer exists.
    pub erased: bool,
    /// False when the person had been erased before (nothing new happened; idempotent).
    pub erased_now: bool,
    /// Position of `user.erased` in the user domain.
    pub position: Option<i64>,
    /// True when every view had dropped the person's data and the database files were
    /// scrubbed before the answer; false when a view was still behind after the wait (it
    /// drops the data when it catches up; run the erasure again to scrub).
    pub views_purged: bool,
}

/// Erases `user_id` (see the module documentation).
pub async fn erase_user(
    db: &Database,
    users: &UserCommands,
    ctx: &CommandContext,
    user_id: Uuid,
    wait: Duration,
) -> Result<ErasureReport, UserCommandError> {
    let erasure = users.erase(ctx, user_id).await?;
    let position = erasure.done.position;
    let views_purged = match position {
        Some(position) => views_caught_up(db, position, wait).await,
        None => true,
    };
    if views_purged {
        if let Err(e) = db.scrub().await {
            tracing::warn!(error = %e, "scrub after erasure failed");
        }
    }
    Ok(ErasureReport {
        user_id,
        erased: true,
        erased_now: erasure.erased_now,
        position,
        views_purged,
    })
}

/// Waits until every view that consumes the user domain has applied it up to `position`.
async fn views_caught_up(db: &Database, position: i64, wait: Duration) -> bool {
    let checkpoints = nova_projections::Checkpoints::default();
    let mut names: Vec<String> = nova_projections::all()
        .iter()
        .filter(|p| p.domains().contains(&Domain::User))
        .map(|p| p.name().to_owned())
        .collect();
    names.push(nova_projections::search::NAME.to_owned());
    let deadline = Instant::now() + wait;
    loop {
        let mut behind = false;
        for name in &names {
            match checkpoints.load(&db.any, name, Domain::User).await {
                Ok(at) if at >= position => {}
                _ => behind = true,
            }
        }
        if !behind {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

//! Reads of the `notification` projection: a user's visible notifications (newest first, cursor
//! paginated), the unread count, and the current per-kind preferences.
//!
//! Visibility is decided here, at read time, from the projection's history tables (ADR 0007):
//! a notification is hidden if its kind was switched off at its `created_at`, or if a block
//! between its actor and recipient (either direction) was in effect at its `created_at` or is
//! in effect now. A notification is read iff `(created_at, id) <= ` the user's read marker.
//! The unread count is not counted here: the projector keeps it per recipient, in the same
//! transactions that change what it counts (ADR 0028).

use std::collections::BTreeMap;

use nova_event_schemas::user::NotificationKind;
use nova_infra::readmodel::{Flag, Id, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::page::{keyset, Order, Page, PageRequest};
use crate::{Cursor, QueryError};

/// One notification as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationRow {
    #[sqlx(try_from = "Id")]
    pub notification_id: Uuid,
    /// `follow`, `like`, `comment`, `mention`, `share`, `stream_started` or `message`.
    pub kind: String,
    /// Who followed, liked, commented, mentioned, shared, went live or wrote.
    #[sqlx(try_from = "Id")]
    pub actor_id: Uuid,
    /// The post concerned (none for `follow`).
    pub post_id: Option<Id>,
    /// The comment concerned (`comment`, and `mention` in a comment).
    pub comment_id: Option<Id>,
    /// The stream that went live (`stream_started`).
    pub stream_id: Option<Id>,
    /// The conversation written in (`message`).
    pub conversation_id: Option<Id>,
    /// The time of the event that caused it.
    pub created_at: Timestamp,
    pub read: Flag,
}

/// A page of the list with the unread count (over the whole list, not this page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPage {
    pub page: Page<NotificationRow>,
    pub unread_count: i64,
}

/// Shown to its recipient, for a row `n`: kind on at creation time, no block then or now —
/// over the view's tables named with `suffix` (a rebuild's copy; `""` for the live view). The
/// general form, one pair of lookups per row; [`Visibility`] writes the same rule as plain
/// comparisons when the recipient's histories are short, which is nearly always. The view's
/// projector counts with it too (its kept unread counts, ADR 0028).
pub fn visible_row(suffix: &str) -> String {
    format!(
        "COALESCE((SELECT p.disabled FROM notification_preference{suffix} p \
                   WHERE p.user_id = n.recipient_id AND p.kind = n.kind \
                     AND p.changed_at <= n.created_at \
                   ORDER BY p.version DESC LIMIT 1), 0) = 0 \
         AND NOT EXISTS (SELECT 1 FROM notification_block{suffix} b \
                     WHERE b.user_id = n.recipient_id AND b.other_id = n.actor_id \
                       AND (b.unblocked_at IS NULL \
                            OR (b.blocked_at <= n.created_at AND n.created_at < b.unblocked_at)))"
    )
}

/// Unread by its recipient, for a row `n`: after their read marker, or no marker at all.
pub fn unread_row(suffix: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM notification_read{suffix} r \
                     WHERE r.user_id = n.recipient_id \
                       AND (n.created_at, n.notification_id) \
                           <= (r.up_to_created_at, r.up_to_id))"
    )
}

/// Past this many comparisons (disabled intervals plus blocks), the general form is used.
pub const MAX_INLINE_TERMS: usize = 64;

/// A recipient's visibility rule and read marker, read once per request (two short lookups by
/// the recipient's key) and turned into SQL over the list's own index: the preference and
/// block histories become comparisons of `kind`, `actor_id` and `created_at` with constants,
/// and "unread" a range of `(created_at, notification_id)` after the marker. A list or count
/// then reads only the rows it returns or counts, never a lookup per row — what makes the
/// unread count of a user with 100,000 notifications cost what counting their unread rows
/// costs (ADR 0007; `nova-bench notification`).
#[derive(Debug, Clone)]
struct Visibility {
    /// `(kind, from, until)`: the kind was switched off from `from` (inclusive) until `until`
    /// (exclusive; `None` = still off).
    disabled: Vec<(String, String, Option<String>)>,
    /// `(actor, from, until)`: a block with `actor` hides `[from, until)`; `None` = the block
    /// is in effect now, which hides everything from that actor.
    blocks: Vec<(String, String, Option<String>)>,
    /// `(up_to_created_at, up_to_id)`.
    marker: Option<(String, String)>,
    /// Use [`visible_row`] instead of the inline comparisons.
    general: bool,
}

/// SQL text with its text parameters, numbered from a given `$n`.
struct Bound {
    next: usize,
    values: Vec<String>,
}

impl Bound {
    fn new(first: usize) -> Bound {
        Bound {
            next: first,
            values: Vec::new(),
        }
    }

    /// The placeholder of a new parameter `value`.
    fn p(&mut self, value: &str) -> String {
        self.values.push(value.to_owned());
        self.next += 1;
        format!("${}", self.next - 1)
    }
}

impl Visibility {
    async fn load(pool: &AnyPool, user: Uuid, max_terms: usize) -> Result<Visibility, QueryError> {
        let user = user.to_string();
        // The three histories in one round trip: (source, text, time, time, version, flag).
        let rows: Vec<(i64, String, String, Option<String>, i64, Flag)> = sqlx::query_as(
            "SELECT CAST(0 AS BIGINT), kind, changed_at, CAST(NULL AS TEXT), version, disabled \
               FROM notification_preference WHERE user_id = $1 \
             UNION ALL \
             SELECT CAST(1 AS BIGINT), other_id, blocked_at, unblocked_at, CAST(0 AS BIGINT), \
                    CAST(0 AS BIGINT) \
               FROM notification_block WHERE user_id = $1 \
             UNION ALL \
             SELECT CAST(2 AS BIGINT), up_to_id, up_to_created_at, CAST(NULL AS TEXT), version, \
                    CAST(0 AS BIGINT) \
               FROM notification_read WHERE user_id = $1",
        )
        .bind(&user)
        .fetch_all(pool)
        .await?;
        let (mut prefs, mut blocks, mut marker) = (Vec::new(), Vec::new(), None);
        for (source, text, at, until, version, flag) in rows {
            match source {
                0 => prefs.push((text, version, at, flag)),
                1 => blocks.push((text, at, until)),
                _ => marker = Some((at, text)),
            }
        }
        let disabled = disabled_intervals(prefs);
        let general = disabled.len() + blocks.len() > max_terms;
        Ok(Visibility {
            disabled,
            blocks,
            marker,
            general,
        })
    }

    /// The condition "visible to the recipient", with the recipient as `$1`.
    fn visible(&self, b: &mut Bound) -> String {
        if self.general {
            return format!("n.recipient_id = $1 AND {}", visible_row(""));
        }
        let mut sql = String::from("n.recipient_id = $1");
        for (kind, from, until) in &self.disabled {
            let (k, f) = (b.p(kind), b.p(from));
            match until {
                Some(u) => {
                    let u = b.p(u);
                    sql += &format!(
                        " AND NOT (n.kind = {k} AND n.created_at >= {f} AND n.created_at < {u})"
                    );
                }
                None => sql += &format!(" AND NOT (n.kind = {k} AND n.created_at >= {f})"),
            }
        }
        for (actor, from, until) in &self.blocks {
            let a = b.p(actor);
            match until {
                Some(u) => {
                    let (f, u) = (b.p(from), b.p(u));
                    sql += &format!(
                        " AND NOT (n.actor_id = {a} AND n.created_at >= {f} \
                         AND n.created_at < {u})"
                    );
                }
                None => sql += &format!(" AND n.actor_id <> {a}"),
            }
        }
        sql
    }

    /// The condition "unread": after the read marker (everything when there is none).
    fn unread(&self, b: &mut Bound) -> String {
        match &self.marker {
            Some((at, id)) => {
                let (at, id) = (b.p(at), b.p(id));
                format!("(n.created_at, n.notification_id) > ({at}, {id})")
            }
            None => "1 = 1".to_owned(),
        }
    }
}

/// Per kind, the intervals of time it was off, from the recipient's preference history. The
/// setting in effect at `t` is that of the highest version changed at or before `t` (one row
/// per kind and version: the complete setting after each change).
fn disabled_intervals(
    mut rows: Vec<(String, i64, String, Flag)>,
) -> Vec<(String, String, Option<String>)> {
    rows.sort_by(|a, b| (&a.0, &a.2, a.1).cmp(&(&b.0, &b.2, b.1)));
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let kind = rows[i].0.clone();
        // (version, disabled) in effect, and since when it has been off.
        let mut best: Option<(i64, bool)> = None;
        let mut off_since: Option<String> = None;
        while i < rows.len() && rows[i].0 == kind {
            let at = rows[i].2.clone();
            while i < rows.len() && rows[i].0 == kind && rows[i].2 == at {
                if best.is_none_or(|(v, _)| rows[i].1 > v) {
                    best = Some((rows[i].1, rows[i].3 .0));
                }
                i += 1;
            }
            let off = best.is_some_and(|(_, d)| d);
            match (&off_since, off) {
                (None, true) => off_since = Some(at),
                (Some(from), false) => {
                    out.push((kind.clone(), from.clone(), Some(at)));
                    off_since = None;
                }
                _ => {}
            }
        }
        if let Some(from) = off_since {
            out.push((kind, from, None));
        }
    }
    out
}

/// `user`'s visible notifications, newest first, after the request's cursor; only unread
/// ones if `unread_only`.
pub async fn list(
    pool: &AnyPool,
    user: Uuid,
    req: &PageRequest,
    unread_only: bool,
) -> Result<NotificationPage, QueryError> {
    list_with(pool, user, req, unread_only, MAX_INLINE_TERMS).await
}

/// [`list`] with the threshold of the general form given (tests hold both forms equal).
pub async fn list_with(
    pool: &AnyPool,
    user: Uuid,
    req: &PageRequest,
    unread_only: bool,
    max_inline_terms: usize,
) -> Result<NotificationPage, QueryError> {
    let vis = Visibility::load(pool, user, max_inline_terms).await?;
    let keyset = keyset(
        req,
        "n.created_at",
        "n.notification_id",
        Order::NewestFirst,
        3,
    );
    let mut b = Bound::new(if req.after.is_some() { 5 } else { 3 });
    let visible = vis.visible(&mut b);
    let unread = vis.unread(&mut b);
    let only = if unread_only {
        format!("AND {unread}")
    } else {
        String::new()
    };
    // The unread count, which the view keeps, rides along: one round trip for the page and
    // the count, a second only when the page is empty.
    let sql = format!(
        "SELECT n.notification_id, n.kind, n.actor_id, n.post_id, n.comment_id, n.stream_id, \
                n.conversation_id, n.created_at, \
                CAST(CASE WHEN {unread} THEN 0 ELSE 1 END AS BIGINT) AS read, \
                {KEPT_UNREAD} AS unread_count \
         FROM notification n \
         WHERE {visible} {keyset} {only} \
         ORDER BY n.created_at DESC, n.notification_id DESC LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, Counted>(&sql)
        .bind(user.to_string())
        .bind(req.fetch());
    if let Some(c) = &req.after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    for v in b.values {
        query = query.bind(v);
    }
    let rows = query.fetch_all(pool).await?;
    let unread_count = match rows.first() {
        Some(r) => r.unread_count,
        // An empty first page: nothing visible (or nothing unread) at all.
        None if req.after.is_none() => 0,
        None => unread_count(pool, user).await?,
    };
    let rows = rows.into_iter().map(|r| r.row).collect();
    Ok(NotificationPage {
        page: Page::cut(rows, req, |n| Cursor::new(n.created_at, n.notification_id)),
        unread_count,
    })
}

/// A listed row with the unread count of the whole list.
#[derive(sqlx::FromRow)]
struct Counted {
    #[sqlx(flatten)]
    row: NotificationRow,
    unread_count: i64,
}

/// The unread count of the recipient `$1` as the view keeps it: the number of rows that are
/// [`visible_row`] and [`unread_row`], maintained by the projector in the transaction that
/// changes any of them (ADR 0028) — one row read, however long the history.
const KEPT_UNREAD: &str =
    "(SELECT COALESCE(MAX(u.unread), 0) FROM notification_unread u WHERE u.recipient_id = $1)";

/// How many of `user`'s visible notifications are unread.
pub async fn unread_count(pool: &AnyPool, user: Uuid) -> Result<i64, QueryError> {
    let (count,): (i64,) = sqlx::query_as(&format!("SELECT {KEPT_UNREAD}"))
        .bind(user.to_string())
        .fetch_one(pool)
        .await?;
    Ok(count)
}

/// The creation time (as listed) of `user`'s notification `id`; `None` if there is no such
/// notification or it belongs to someone else.
pub async fn created_at_of(
    pool: &AnyPool,
    user: Uuid,
    id: Uuid,
) -> Result<Option<String>, QueryError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT created_at FROM notification WHERE notification_id = $1 AND recipient_id = $2",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Whether a block between `a` and `b` (either direction) is in effect now, from the view's
/// block intervals (one row per block, per side; `unblocked_at` set when it was lifted). This is
/// the only read model that keeps blocks today; `follow_graph` keeps follows only.
pub async fn block_between(pool: &AnyPool, a: Uuid, b: Uuid) -> Result<bool, QueryError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM notification_block \
         WHERE user_id = $1 AND other_id = $2 AND unblocked_at IS NULL LIMIT 1",
    )
    .bind(a.to_string())
    .bind(b.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// The users with whom a block (either direction) is in effect for `user` now: one row per
/// block and per side, so the rows of `user` name both whom they blocked and who blocked them.
pub async fn blocks_of(pool: &AnyPool, user: Uuid) -> Result<Vec<Uuid>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT other_id FROM notification_block \
         WHERE user_id = $1 AND unblocked_at IS NULL",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id,)| Uuid::parse_str(&id).map_err(|e| QueryError::Corrupt(e.to_string())))
        .collect()
}

/// `user`'s current setting per kind (true = on). Every kind is on until switched off.
pub async fn preferences(
    pool: &AnyPool,
    user: Uuid,
) -> Result<BTreeMap<NotificationKind, bool>, QueryError> {
    let rows: Vec<(String, Flag)> = sqlx::query_as(
        "SELECT kind, disabled FROM notification_preference \
         WHERE user_id = $1 \
           AND version = (SELECT MAX(version) FROM notification_preference WHERE user_id = $1)",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await?;
    let mut prefs: BTreeMap<NotificationKind, bool> = NotificationKind::ALL
        .into_iter()
        .map(|k| (k, true))
        .collect();
    for (kind, Flag(disabled)) in rows {
        let kind: String = kind;
        let kind = NotificationKind::parse(&kind)
            .ok_or_else(|| QueryError::Corrupt(format!("unknown notification kind {kind:?}")))?;
        prefs.insert(kind, !disabled);
    }
    Ok(prefs)
}

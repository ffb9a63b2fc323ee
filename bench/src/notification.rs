//! `notification`: a user's notification list and unread count at 100,000 notifications.
//!
//! The notification view decides visibility when it is read (ADR 0007): a notification is
//! hidden if its kind was switched off at its time or a block between actor and recipient was
//! in effect then or is now. This scenario fills the view's tables (untimed, in the projector's
//! row format) with `--notifications` notifications of one user from 2,000 actors over a year,
//! as many again for 100 other users, a history of preference changes and of blocks (some
//! lifted, some in effect), and a read marker with `--unread` notifications after it. Then, one
//! read at a time, `--reads` times each:
//!
//! - **unread count** (`queries::notification::unread_count`, which reads the count the
//!   projector keeps, ADR 0028) beside **raw**: `COUNT(*)` of the user's rows after the read
//!   marker, with no visibility rule — the least a count made at read time must read;
//! - **first page** and **first unread page** (`queries::notification::list`, 20 items, which
//!   counts the unread too) beside **raw**: the user's 21 newest rows by the list's index.
//!
//! Each figure is run with the `--unread` notifications after the marker and again with all of
//! them unread (a user who never reads). Target: p99 < 10 ms.
//!
//! And what keeping the view costs its projector: `--likes` likes of 100 authors' posts
//! (appended first, untimed) applied by `catch_up(NotificationView)` from scratch — the dedup
//! lookup, the insert and the kept unread count (ADR 0028) per like, 500 per transaction —
//! beside **raw**: the same number of notification rows inserted one statement each into a
//! copy of the view's table, committing every 500.

use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use nova_event_schemas::post::{like_id, Liked, PostEvent};
use nova_event_schemas::user::NotificationKind;
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::Engine;
use nova_infra::readmodel::ts;
use nova_projections::notification::NotificationView;
use nova_queries::notification as notifications;
use nova_queries::page::PageRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::AnyPool;
use uuid::Uuid;

use crate::harness::count_bar;
use crate::project::timed_catch_up;
use crate::stats::{ratio, Percentiles, Throughput};
use crate::target::{engine_name, open_fresh, BackendChoice};
use crate::workload::fill_untimed;
use crate::Error;

/// Actors who notify the measured user.
const ACTORS: usize = 2_000;
/// Other recipients, each with `--notifications / OTHERS` rows.
const OTHERS: usize = 100;
/// Rows per INSERT while filling.
const FILL_CHUNK: usize = 500;
/// Minutes between two notifications of the measured user.
const STEP_MINUTES: i64 = 5;
const TARGET_P99_MS: f64 = 10.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1_000..=10_000_000))]
    pub notifications: u64,
    /// Notifications after the read marker in the first measurement (the second has all).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub unread: u64,
    /// Reads of each kind measured.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub reads: u64,
    /// Likes applied by the projector for its apply rate.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(500..=1_000_000))]
    pub likes: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// Print one JSON object with every figure instead of the table (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    notifications: u64,
    target_p99_ms: f64,
    runs: Vec<Run>,
    apply: Vec<Apply>,
}

#[derive(Debug, Serialize)]
struct Apply {
    backend: &'static str,
    raw_operation: &'static str,
    projector_operation: &'static str,
    raw: Throughput,
    projector: Throughput,
    projector_to_raw: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Run {
    backend: &'static str,
    unread: u64,
    /// The figures that came out of the queries, checked against each other.
    unread_count: i64,
    raw_count: Percentiles,
    count: Percentiles,
    count_p99_to_raw: Option<f64>,
    raw_page: Percentiles,
    first_page: Percentiles,
    first_page_p99_to_raw: Option<f64>,
    unread_page: Percentiles,
    unread_page_p99_to_raw: Option<f64>,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let (mut runs, mut apply) = (Vec::new(), Vec::new());
    for engine in args.backend.engines() {
        let fresh = open_fresh(engine).await?;
        let pool = fresh.db.any.clone();
        let user = fill(&pool, &args).await?;
        if engine == Engine::Postgres {
            // As the projectors do after a large catch-up.
            sqlx::query("ANALYZE").execute(&pool).await?;
        }
        for unread in [args.unread.min(args.notifications), args.notifications] {
            set_marker(&pool, user, args.notifications, unread).await?;
            runs.push(measure(&pool, engine, user, unread, &args).await?);
        }
        fresh.close().await;
        apply.push(bench_apply(engine, &args).await?);
    }
    let report = Report {
        scenario: "notification",
        notifications: args.notifications,
        target_p99_ms: TARGET_P99_MS,
        runs,
        apply,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn at(i: u64) -> DateTime<Utc> {
    let start = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    start + chrono::Duration::minutes(i as i64 * STEP_MINUTES)
}

fn day(d: i64) -> DateTime<Utc> {
    at(0) + chrono::Duration::days(d)
}

/// Fills the view's tables; answers the measured user.
async fn fill(pool: &AnyPool, args: &Args) -> Result<Uuid, Error> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let user = Uuid::now_v7();
    let actors: Vec<Uuid> = (0..ACTORS).map(|_| Uuid::now_v7()).collect();
    let others: Vec<Uuid> = (0..OTHERS).map(|_| Uuid::now_v7()).collect();
    let total = args.notifications * 2;
    let bar = count_bar("fill", total, !args.json);
    let mut rows = Vec::with_capacity(FILL_CHUNK);
    for i in 0..total {
        let (recipient, when) = if i < args.notifications {
            (user, at(i))
        } else {
            let j = i - args.notifications;
            (others[(j as usize) % OTHERS], at(j))
        };
        let kind = NotificationKind::ALL[rng.gen_range(0..NotificationKind::ALL.len())];
        let actor = actors[rng.gen_range(0..ACTORS)];
        rows.push((Uuid::now_v7(), recipient, kind, actor, when));
        if rows.len() == FILL_CHUNK || i + 1 == total {
            insert(pool, &rows).await?;
            bar.inc(rows.len() as u64);
            rows.clear();
        }
    }
    bar.finish_and_clear();
    // Likes off for a month, then on again; shares off since day 200.
    let changes = [
        (1, day(30), Some(NotificationKind::Like)),
        (2, day(60), None),
    ];
    let changes = changes
        .into_iter()
        .chain([(3, day(200), Some(NotificationKind::Share))]);
    for (version, changed_at, off) in changes {
        for kind in NotificationKind::ALL {
            sqlx::query(
                "INSERT INTO notification_preference (user_id, kind, version, changed_at, \
                     disabled) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user.to_string())
            .bind(kind.as_str())
            .bind(version as i64)
            .bind(ts(changed_at))
            .bind(i64::from(off == Some(kind)))
            .execute(pool)
            .await?;
        }
    }
    // Ten blocks: five lifted after twenty days, five in effect; stored under both users.
    for (n, actor) in actors.iter().take(10).enumerate() {
        let unblocked = (n < 5).then(|| ts(day(120)));
        for (a, b) in [(user, *actor), (*actor, user)] {
            sqlx::query(
                "INSERT INTO notification_block (user_id, other_id, version, blocker_id, \
                     blocked_at, unblocked_at) VALUES ($1, $2, 1, $3, $4, $5)",
            )
            .bind(a.to_string())
            .bind(b.to_string())
            .bind(user.to_string())
            .bind(ts(day(100)))
            .bind(unblocked.clone())
            .execute(pool)
            .await?;
        }
    }
    Ok(user)
}

async fn insert(
    pool: &AnyPool,
    rows: &[(Uuid, Uuid, NotificationKind, Uuid, DateTime<Utc>)],
) -> Result<(), Error> {
    let values: Vec<String> = (0..rows.len())
        .map(|r| {
            let b = r * 6;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO notification (notification_id, recipient_id, kind, actor_id, post_id, \
             created_at) VALUES {}",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (id, recipient, kind, actor, when) in rows {
        let post = (*kind != NotificationKind::Follow).then(|| Uuid::now_v7().to_string());
        query = query
            .bind(id.to_string())
            .bind(recipient.to_string())
            .bind(kind.as_str())
            .bind(actor.to_string())
            .bind(post)
            .bind(ts(*when));
    }
    query.execute(pool).await?;
    Ok(())
}

/// Moves the user's read marker so that `unread` of their notifications come after it.
/// The view's kept unread counts are then counted again from the rows, as the projector would
/// have left them.
async fn set_marker(pool: &AnyPool, user: Uuid, total: u64, unread: u64) -> Result<(), Error> {
    sqlx::query("DELETE FROM notification_read WHERE user_id = $1")
        .bind(user.to_string())
        .execute(pool)
        .await?;
    if unread < total {
        read_up_to(pool, user, unread).await?;
    }
    NotificationView::default().recount(pool).await?;
    Ok(())
}

async fn read_up_to(pool: &AnyPool, user: Uuid, unread: u64) -> Result<(), Error> {
    let (id, created_at): (String, String) = sqlx::query_as(
        "SELECT notification_id, created_at FROM notification WHERE recipient_id = $1 \
         ORDER BY created_at DESC, notification_id DESC LIMIT 1 OFFSET $2",
    )
    .bind(user.to_string())
    .bind(unread as i64)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "INSERT INTO notification_read (user_id, up_to_created_at, up_to_id, version) \
         VALUES ($1, $2, $3, 1)",
    )
    .bind(user.to_string())
    .bind(created_at)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

async fn measure(
    pool: &AnyPool,
    engine: Engine,
    user: Uuid,
    unread: u64,
    args: &Args,
) -> Result<Run, Error> {
    let label = format!("{} {unread}", engine_name(engine));
    let bar = count_bar(&label, args.reads * 4, !args.json);
    let marker: Option<(String, String)> = sqlx::query_as(
        "SELECT up_to_created_at, up_to_id FROM notification_read WHERE user_id = $1",
    )
    .bind(user.to_string())
    .fetch_optional(pool)
    .await?;
    let (marker_at, marker_id) = marker.unwrap_or_default();
    let page = PageRequest::first(20);
    let (mut raw_count, mut count, mut raw_page, mut first, mut unread_page) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut unread_count = 0;
    for _ in 0..args.reads {
        let t = Instant::now();
        let _: (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM notification WHERE recipient_id = $1 \
               AND (created_at > $2 OR (created_at = $2 AND notification_id > $3))",
        )
        .bind(user.to_string())
        .bind(&marker_at)
        .bind(&marker_id)
        .fetch_one(pool)
        .await?;
        raw_count.push(t.elapsed());
        let t = Instant::now();
        unread_count = notifications::unread_count(pool, user).await?;
        count.push(t.elapsed());
        let t = Instant::now();
        let _: Vec<(String, String)> = sqlx::query_as(
            "SELECT notification_id, created_at FROM notification WHERE recipient_id = $1 \
             ORDER BY created_at DESC, notification_id DESC LIMIT 21",
        )
        .bind(user.to_string())
        .fetch_all(pool)
        .await?;
        raw_page.push(t.elapsed());
        let t = Instant::now();
        let listed = notifications::list(pool, user, &page, false).await?;
        first.push(t.elapsed());
        let t = Instant::now();
        let unread_listed = notifications::list(pool, user, &page, true).await?;
        unread_page.push(t.elapsed());
        if listed.unread_count != unread_count || unread_listed.unread_count != unread_count {
            return Err("the list and the count disagree".into());
        }
        bar.inc(4);
    }
    bar.finish_and_clear();
    let (raw_count, count) = (Percentiles::new(raw_count), Percentiles::new(count));
    let (raw_page, first_page) = (Percentiles::new(raw_page), Percentiles::new(first));
    let unread_page = Percentiles::new(unread_page);
    Ok(Run {
        backend: engine_name(engine),
        unread,
        unread_count,
        count_p99_to_raw: ratio(count.p99_ms, raw_count.p99_ms),
        first_page_p99_to_raw: ratio(first_page.p99_ms, raw_page.p99_ms),
        unread_page_p99_to_raw: ratio(unread_page.p99_ms, raw_page.p99_ms),
        raw_count,
        count,
        raw_page,
        first_page,
        unread_page,
    })
}

/// Rows per transaction of the raw insert (the projector runtime's batch).
const RAW_BATCH: usize = 500;
/// Appends in flight while the likes are written (untimed).
const APPEND_CONCURRENCY: usize = 32;

async fn bench_apply(engine: Engine, args: &Args) -> Result<Apply, Error> {
    let name = engine_name(engine);
    let progress = !args.json;
    let fresh = open_fresh(engine).await?;
    let db = &fresh.db;
    let authors: Vec<(Uuid, Uuid)> = (0..100).map(|_| (Uuid::now_v7(), Uuid::now_v7())).collect();
    // (post, author, liker, time) of every like; every liker likes once.
    let likes: Vec<(Uuid, Uuid, Uuid, DateTime<Utc>)> = (0..args.likes)
        .map(|i| {
            let (post, author) = authors[(i % 100) as usize];
            (post, author, Uuid::now_v7(), at(i))
        })
        .collect();
    let appends = futures::stream::iter(likes.iter().copied()).map(
        |(post_id, post_author_id, user_id, liked_at)| async move {
            let event = PostEvent::Liked(Liked {
                post_id,
                user_id,
                post_author_id,
                liked_at,
            });
            let id = like_id(post_id, user_id);
            db.store
                .append(vec![(id, "like", 0, vec![event])], EventMetadata::default())
                .await?;
            Ok(1)
        },
    );
    let label = format!("{name} append likes");
    fill_untimed(appends, args.likes, APPEND_CONCURRENCY, &label, progress).await?;

    let view = NotificationView::default();
    let raw_table = "notification_bench_raw";
    nova_projections::schema::create_copies(&db.any, &["notification".to_owned()], "_bench_raw")
        .await?;
    let bar = count_bar(&format!("{name} raw insert"), args.likes, progress);
    let started = Instant::now();
    let insert = format!(
        "INSERT INTO {raw_table} (notification_id, recipient_id, kind, actor_id, \
             post_id, comment_id, created_at, conversation_id) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6, NULL) \
         ON CONFLICT (notification_id) DO NOTHING"
    );
    for chunk in likes.chunks(RAW_BATCH) {
        let mut tx = db.any.begin().await?;
        for (post, author, liker, when) in chunk {
            sqlx::query(&insert)
                .bind(Uuid::now_v7().to_string())
                .bind(author.to_string())
                .bind(NotificationKind::Like.as_str())
                .bind(liker.to_string())
                .bind(post.to_string())
                .bind(ts(*when))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        bar.inc(chunk.len() as u64);
    }
    let raw = Throughput::new(args.likes, started.elapsed());
    bar.finish_and_clear();

    let label = format!("{name} catch_up");
    let elapsed = timed_catch_up(&view, Domain::Post, db, &label, args.likes, progress).await?;
    let projector = Throughput::new(args.likes, elapsed);
    // Every like is one unread notification of its post's author, and counted.
    let (rows, counted): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM notification), \
                (SELECT CAST(COALESCE(SUM(unread), 0) AS BIGINT) FROM notification_unread)",
    )
    .fetch_one(&db.any)
    .await?;
    if rows != args.likes as i64 || counted != rows {
        return Err(format!(
            "{name}: {rows} notifications and {counted} counted unread, expected {}",
            args.likes
        )
        .into());
    }
    fresh.close().await;
    Ok(Apply {
        backend: name,
        raw_operation: "one INSERT per notification row into a copy of the view's table, \
                        COMMIT every 500",
        projector_operation: "catch_up(NotificationView) from scratch over post.liked events: \
                              dedup lookup, insert, kept unread count; 500 per transaction",
        projector_to_raw: ratio(projector.per_sec, raw.per_sec),
        raw,
        projector,
    })
}

fn print_table(report: &Report) {
    println!(
        "notification reads, {} notifications of one user (target p99 < {} ms)",
        report.notifications, report.target_p99_ms
    );
    println!(
        "{:<9} {:>8} {:>8}  {:<16} {:>9} {:>9} {:>10}",
        "backend", "unread", "visible", "read", "p50 ms", "p99 ms", "p99/raw"
    );
    for r in &report.runs {
        let rows = [
            ("raw count", &r.raw_count, None),
            ("unread_count", &r.count, r.count_p99_to_raw),
            ("raw page", &r.raw_page, None),
            ("first page", &r.first_page, r.first_page_p99_to_raw),
            (
                "first unread page",
                &r.unread_page,
                r.unread_page_p99_to_raw,
            ),
        ];
        for (name, p, vs) in rows {
            println!(
                "{:<9} {:>8} {:>8}  {:<16} {:>9.3} {:>9.3} {:>10}",
                r.backend,
                r.unread,
                r.unread_count,
                name,
                p.p50_ms,
                p.p99_ms,
                vs.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
            );
        }
    }
    println!("\nnotification projector apply rate (post.liked → notification)");
    println!(
        "{:<9} {:>14} {:>16} {:>14}",
        "backend", "raw rows/s", "projector ev/s", "projector/raw"
    );
    for a in &report.apply {
        println!(
            "{:<9} {:>14.0} {:>16.0} {:>14}",
            a.backend,
            a.raw.per_sec,
            a.projector.per_sec,
            a.projector_to_raw
                .map(|v| format!("{v:.2}x"))
                .unwrap_or_else(|| "-".into())
        );
    }
}

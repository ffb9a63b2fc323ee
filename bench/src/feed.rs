//! `feed`: the home timeline at social-network shape. A history of `--users` registrations, a
//! follow graph with a heavy-tailed follower distribution (each user follows 5–35 others chosen
//! by a Zipf law over popularity ranks, so a few accounts have thousands of followers) and
//! `--posts` posts by uniformly chosen authors is appended to a fresh store (untimed). Then, per
//! backend:
//!
//! - **fan-out**: the `feed` projection applies the user and follow domains (untimed), then the
//!   post domain is timed: every post is written into its followers' timelines (one
//!   `INSERT … SELECT` per post; authors at or above the fan-out threshold are skipped and merged
//!   at read time). Reported as timeline rows/s, beside **raw**: the same rows (read back from
//!   the timeline, grouped per post) inserted with one multi-row `INSERT … VALUES` per post into
//!   a copy of the migrated timeline table (as rebuilds make it), committing every 500 posts
//!   (the runtime's batch) — what the database takes in that shape with no projector around it.
//! - **rebuild**: `nova projections rebuild feed` as ops run it (`rebuild::rebuild`: a fresh copy
//!   from the whole store, then the swap), timed end to end. Target: < 60 s for 100k posts.
//! - **read**: `queries::feed::page` for the first page (20 items) and the page after it, for
//!   `--reads` users drawn uniformly plus the users following the most popular accounts, one at
//!   a time; p50/p99 beside **raw**: a primary-key lookup of one post in the feed's post table on
//!   the same pool. Target: p99 < 10 ms.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use chrono::{TimeZone, Utc};
use nova_event_schemas::follow::{relationship_id, FollowEvent, Followed};
use nova_event_schemas::post::{PostCreated, PostEvent};
use nova_event_schemas::user::{Registered, UserEvent};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::{Database, Engine};
use nova_infra::store::EventStore;
use nova_projections::feed::Feed;
use nova_projections::{project_once, Checkpoints, Projection, StoreTail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::AnyPool;
use uuid::Uuid;

use crate::harness::count_bar;
use crate::stats::{print_throughput_table, ratio, Percentiles, Throughput};
use crate::target::{engine_name, open_fresh, BackendChoice};
use crate::Error;

/// Streams per append while loading the history.
const LOAD_CHUNK: usize = 500;
/// Posts per transaction of the raw baseline: the projector runtime's batch size.
const RAW_BATCH: usize = 500;
/// Zipf exponent of followee popularity.
const ZIPF_S: f64 = 1.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(40..=1_000_000))]
    pub users: u64,
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub posts: u64,
    /// Feed reads measured (each reads two pages).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub reads: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// Print one JSON object with every figure instead of the tables (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    users: u64,
    posts: u64,
    follows: u64,
    max_followers: u64,
    authors_over_threshold: u64,
    fanout_threshold: i64,
    backends: Vec<BackendReport>,
}

#[derive(Debug, Serialize)]
struct BackendReport {
    backend: &'static str,
    /// Timeline rows written by the fan-out.
    timeline_rows: u64,
    raw_fanout: Throughput,
    fanout: Throughput,
    fanout_to_raw: Option<f64>,
    rebuild_seconds: f64,
    rebuild_target_seconds: f64,
    raw_read: Percentiles,
    first_page: Percentiles,
    next_page: Percentiles,
    read_target_p99_ms: f64,
}

/// The generated history.
struct History {
    users: Vec<Uuid>,
    /// (follower, followee) indexes.
    follows: BTreeSet<(usize, usize)>,
    max_followers: u64,
    over_threshold: u64,
}

fn generate(args: &Args) -> History {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let n = args.users as usize;
    let users: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    // Popularity rank r (0 = most popular) has weight 1/(r+1)^s; ranks are shuffled over users.
    let mut cumulative = Vec::with_capacity(n);
    let mut total = 0.0;
    for r in 0..n {
        total += 1.0 / ((r + 1) as f64).powf(ZIPF_S);
        cumulative.push(total);
    }
    let mut follows = BTreeSet::new();
    for u in 0..n {
        let k = rng.gen_range(5..=35usize).min(n - 1);
        let mut picked = BTreeSet::new();
        while picked.len() < k {
            let x = rng.gen_range(0.0..total);
            let r = cumulative.partition_point(|&c| c < x).min(n - 1);
            if r != u {
                picked.insert(r);
            }
        }
        for v in picked {
            follows.insert((u, v));
        }
    }
    let mut followers: HashMap<usize, u64> = HashMap::new();
    for &(_, v) in &follows {
        *followers.entry(v).or_default() += 1;
    }
    let threshold = nova_projections::feed::FANOUT_THRESHOLD as u64;
    History {
        users,
        max_followers: followers.values().copied().max().unwrap_or(0),
        over_threshold: followers.values().filter(|&&c| c >= threshold).count() as u64,
        follows,
    }
}

fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::now_v7(),
        ..EventMetadata::default()
    }
}

async fn load(store: &EventStore, h: &History, args: &Args, progress: bool) -> Result<(), Error> {
    let epoch = Utc
        .timestamp_opt(1_767_225_600, 0)
        .single()
        .ok_or("bad epoch")?;
    let total = h.users.len() as u64 + h.follows.len() as u64 + args.posts;
    let bar = count_bar("load history", total, progress);

    for (i, chunk) in h.users.chunks(LOAD_CHUNK).enumerate() {
        let streams = chunk
            .iter()
            .enumerate()
            .map(|(j, &id)| {
                let event = UserEvent::Registered(Registered {
                    user_id: id,
                    username: format!("feeder{}", i * LOAD_CHUNK + j),
                    display_name: None,
                    credential_id: Uuid::now_v7(),
                    registered_at: epoch,
                });
                (id, "user", 0, vec![event])
            })
            .collect();
        store.append(streams, metadata()).await?;
        bar.inc(chunk.len() as u64);
    }

    // A relationship holds both directions: group them so each stream is appended once.
    let mut by_pair: HashMap<Uuid, Vec<FollowEvent>> = HashMap::new();
    for &(a, b) in &h.follows {
        let (follower_id, followee_id) = (h.users[a], h.users[b]);
        by_pair
            .entry(relationship_id(follower_id, followee_id))
            .or_default()
            .push(FollowEvent::Followed(Followed {
                follower_id,
                followee_id,
                followed_at: epoch,
            }));
    }
    let pairs: Vec<(Uuid, Vec<FollowEvent>)> = by_pair.into_iter().collect();
    for chunk in pairs.chunks(LOAD_CHUNK) {
        let n: usize = chunk.iter().map(|(_, e)| e.len()).sum();
        let streams = chunk
            .iter()
            .map(|(id, events)| (*id, "relationship", 0, events.clone()))
            .collect();
        store.append(streams, metadata()).await?;
        bar.inc(n as u64);
    }

    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let mut i = 0u64;
    while i < args.posts {
        let n = (args.posts - i).min(LOAD_CHUNK as u64);
        let streams = (i..i + n)
            .map(|k| {
                let post_id = Uuid::now_v7();
                let author_id = h.users[rng.gen_range(0..h.users.len())];
                let event = PostEvent::Created(PostCreated {
                    post_id,
                    author_id,
                    content: format!("post number {k}: a sentence of ordinary length to carry"),
                    media_urls: Vec::new(),
                    mentions: Vec::new(),
                    created_at: epoch + chrono::Duration::milliseconds(k as i64),
                });
                (post_id, "post", 0, vec![event])
            })
            .collect();
        store.append(streams, metadata()).await?;
        bar.inc(n);
        i += n;
    }
    bar.finish_and_clear();
    Ok(())
}

async fn count(pool: &AnyPool, table: &str) -> Result<u64, Error> {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

/// Applies the user and follow domains (untimed), then times the post domain.
async fn fanout(db: &Database, progress: bool, posts: u64) -> Result<(u64, Throughput), Error> {
    let feed = Feed::default();
    let checkpoints = Checkpoints::default();
    let source = StoreTail::new(db.store.clone());
    for domain in [Domain::User, Domain::Follow] {
        while project_once(&feed, domain, &source, &db.any, &checkpoints).await? {}
    }
    let bar = count_bar("fan-out", posts, progress);
    let started = Instant::now();
    while project_once(&feed, Domain::Post, &source, &db.any, &checkpoints).await? {
        bar.set_position(checkpoints.cached(feed.name(), Domain::Post) as u64);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let rows = count(&db.any, "feed_timeline").await?;
    Ok((rows, Throughput::new(rows, elapsed)))
}

type TimelineRow = (String, String, String, String);

/// The fan-out's own rows, re-inserted with one multi-row INSERT per post into a copy.
async fn raw_fanout(db: &Database, progress: bool) -> Result<Throughput, Error> {
    let suffix = "__bench_raw";
    nova_projections::schema::create_copies(&db.any, &Feed::default().tables(), suffix).await?;
    let rows: Vec<TimelineRow> = sqlx::query_as(
        "SELECT owner_id, created_at, post_id, author_id FROM feed_timeline ORDER BY post_id",
    )
    .fetch_all(&db.any)
    .await?;
    let mut per_post: Vec<&[TimelineRow]> = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || rows[i].2 != rows[start].2 {
            per_post.push(&rows[start..i]);
            start = i;
        }
    }
    let bar = count_bar("raw fan-out", rows.len() as u64, progress);
    let started = Instant::now();
    for batch in per_post.chunks(RAW_BATCH) {
        let mut tx = db.any.begin().await?;
        for post in batch {
            // Stay under SQLite's bound-parameter limit with large fan-outs.
            for part in post.chunks(200) {
                let values: Vec<String> = (0..part.len())
                    .map(|i| {
                        format!(
                            "(${}, ${}, ${}, ${})",
                            4 * i + 1,
                            4 * i + 2,
                            4 * i + 3,
                            4 * i + 4
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO feed_timeline{suffix} (owner_id, created_at, post_id, author_id) \
                     VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql);
                for r in part.iter() {
                    q = q.bind(&r.0).bind(&r.1).bind(&r.2).bind(&r.3);
                }
                q.execute(&mut *tx).await?;
            }
            bar.inc(post.len() as u64);
        }
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Throughput::new(rows.len() as u64, elapsed))
}

async fn rebuild(db: &Database, progress: bool) -> Result<f64, Error> {
    let bar = count_bar("rebuild feed", 0, progress);
    let live = nova_projections::rebuild::find("feed")?;
    let started = Instant::now();
    nova_projections::rebuild::rebuild(live, &db.store, &db.any, &Checkpoints::default(), |p| {
        bar.set_length(p.head.max(0) as u64);
        bar.set_position(p.position.max(0) as u64);
        bar.set_message(p.domain.as_str());
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(seconds)
}

struct Reads {
    raw: Percentiles,
    first: Percentiles,
    next: Percentiles,
}

async fn reads(db: &Database, h: &History, args: &Args, progress: bool) -> Result<Reads, Error> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x4ead);
    // Readers: uniform users, plus followers of the most popular account (read-time merge).
    let mut readers: Vec<Uuid> = (0..args.reads)
        .map(|_| h.users[rng.gen_range(0..h.users.len())])
        .collect();
    let fans: Vec<Uuid> = h
        .follows
        .iter()
        .filter(|(_, b)| *b == 0)
        .take((args.reads / 10) as usize)
        .map(|&(a, _)| h.users[a])
        .collect();
    readers.truncate(readers.len().saturating_sub(fans.len()));
    readers.extend(fans);
    let posts: Vec<(String,)> = sqlx::query_as("SELECT post_id FROM feed_posts LIMIT 1000")
        .fetch_all(&db.any)
        .await?;

    let bar = count_bar("feed reads", readers.len() as u64, progress);
    let (mut raw, mut first, mut next) = (Vec::new(), Vec::new(), Vec::new());
    for (i, reader) in readers.iter().enumerate() {
        let post = &posts[i % posts.len().max(1)].0;
        let t = Instant::now();
        let _: Option<(String,)> =
            sqlx::query_as("SELECT author_id FROM feed_posts WHERE post_id = $1")
                .bind(post)
                .fetch_optional(&db.any)
                .await?;
        raw.push(t.elapsed());

        let t = Instant::now();
        let req = nova_queries::PageRequest::first(20);
        let page = nova_queries::feed::page(&db.any, *reader, &req).await?;
        first.push(t.elapsed());
        if let Some(cursor) = page.next_cursor.as_deref() {
            let t = Instant::now();
            let req = nova_queries::PageRequest::parse(None, Some(cursor))?;
            nova_queries::feed::page(&db.any, *reader, &req).await?;
            next.push(t.elapsed());
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Reads {
        raw: Percentiles::new(raw),
        first: Percentiles::new(first),
        next: Percentiles::new(next),
    })
}

pub async fn run(args: Args) -> Result<(), Error> {
    let progress = !args.json;
    let history = generate(&args);
    let mut backends = Vec::new();
    for engine in args.backend.engines() {
        let name = engine_name(engine);
        let fresh = open_fresh(engine).await?;
        let outcome = bench_backend(engine, &fresh.db, &history, &args, progress).await;
        fresh.close().await;
        backends.push(outcome.map_err(|e| format!("{name}: {e}"))?);
    }
    let report = Report {
        scenario: "feed",
        users: args.users,
        posts: args.posts,
        follows: history.follows.len() as u64,
        max_followers: history.max_followers,
        authors_over_threshold: history.over_threshold,
        fanout_threshold: nova_projections::feed::FANOUT_THRESHOLD,
        backends,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn bench_backend(
    engine: Engine,
    db: &Database,
    h: &History,
    args: &Args,
    progress: bool,
) -> Result<BackendReport, Error> {
    load(&db.store, h, args, progress).await?;
    let (timeline_rows, fanout) = fanout(db, progress, args.posts).await?;
    let raw_fanout = raw_fanout(db, progress).await?;
    let rebuild_seconds = rebuild(db, progress).await?;
    let reads = reads(db, h, args, progress).await?;
    Ok(BackendReport {
        backend: engine_name(engine),
        timeline_rows,
        fanout_to_raw: ratio(fanout.per_sec, raw_fanout.per_sec),
        raw_fanout,
        fanout,
        rebuild_seconds: (rebuild_seconds * 1000.0).round() / 1000.0,
        rebuild_target_seconds: 60.0,
        raw_read: reads.raw,
        first_page: reads.first,
        next_page: reads.next,
        read_target_p99_ms: 10.0,
    })
}

fn print_report(r: &Report) {
    println!(
        "feed: {} users, {} follows (max {} followers; {} authors at or over the fan-out \
         threshold of {}), {} posts",
        r.users, r.follows, r.max_followers, r.authors_over_threshold, r.fanout_threshold, r.posts
    );
    println!();
    println!("fan-out (timeline rows written; raw = same rows, one multi-row INSERT per post)");
    print_throughput_table(
        "fanout",
        r.backends
            .iter()
            .map(|b| (b.backend, &b.raw_fanout, &b.fanout, b.fanout_to_raw)),
    );
    println!();
    println!("rebuild of the feed projection (whole history, copy + swap); target < 60 s");
    for b in &r.backends {
        println!(
            "{:<9} {:>8.1} s   {}",
            b.backend,
            b.rebuild_seconds,
            if b.rebuild_seconds < b.rebuild_target_seconds {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    println!();
    println!("feed reads, 20 items (raw = one primary-key lookup); target p99 < 10 ms");
    println!(
        "{:<9} {:<11} {:>7} {:>9} {:>9} {:>9}  {:>9}",
        "backend", "path", "samples", "p50 ms", "p99 ms", "max ms", "p99/raw"
    );
    for b in &r.backends {
        for (path, p) in [
            ("raw", &b.raw_read),
            ("first page", &b.first_page),
            ("next page", &b.next_page),
        ] {
            let vs = if path == "raw" {
                String::new()
            } else {
                ratio(p.p99_ms, b.raw_read.p99_ms)
                    .map(|x| format!("{x:.1}x"))
                    .unwrap_or_default()
            };
            println!(
                "{:<9} {:<11} {:>7} {:>9.3} {:>9.3} {:>9.3}  {:>9}",
                b.backend, path, p.samples, p.p50_ms, p.p99_ms, p.max_ms, vs
            );
        }
    }
}

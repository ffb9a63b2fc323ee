//! `search`: the search index (ADR 0013).
//!
//! - **(a) indexing rate**, N `post.created` events (built in memory, not timed), each path into
//!   its own fresh index directory:
//!   - **raw**: the same N documents (built before the clock starts) with tantivy's
//!     `add_document`, committing every 500 (the projector's batch size), same schema, same
//!     writer settings (one thread, the projector's memory budget);
//!   - **projector**: `SearchProjector::apply` of each event (decode, delete-by-term, add) and a
//!     commit with the checkpoint payload every 500 events.
//! - **(b) query latency** on the projector's index of N posts: `--queries` searches, each one
//!   or two words drawn from the corpus's vocabulary, a third of them with one typo
//!   (transposition) and a third cut to a prefix; p50/p99 of `nova_queries::search::search`
//!   (one page of 20), beside a single exact `TermQuery` top-20 on the same searcher.

use std::collections::HashSet;
use std::time::Instant;

use nova_event_schemas::post::{PostCreated, PostEvent};
use nova_event_schemas::{Domain, DomainEvent, EventMetadata};
use nova_infra::search::{SearchIndex, POST};
use nova_infra::store::RecordedEvent;
use nova_projections::search::{SearchProjector, WRITER_MEMORY};
use nova_queries::search::{search, SearchRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{IndexWriter, TantivyDocument, Term};
use uuid::Uuid;

use crate::stats::{print_throughput_table, ratio, Percentiles, Throughput};
use crate::Error;

const BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Posts indexed (and searched in (b)).
    #[arg(long, default_value_t = 100_000)]
    pub posts: usize,
    /// Queries timed in (b).
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    posts: usize,
    raw: Throughput,
    projector: Throughput,
    projector_vs_raw: Option<f64>,
    segments: usize,
    query: Percentiles,
    raw_term_query: Percentiles,
}

/// A vocabulary of pronounceable words of 3–12 letters.
fn vocabulary(rng: &mut StdRng, n: usize) -> Vec<String> {
    const SYL: &[&str] = &[
        "ka", "lo", "mi", "ne", "ru", "ta", "vo", "zen", "bar", "qui", "sol", "ter", "an", "el",
        "or", "ur", "pra", "sti", "gon", "del",
    ];
    let mut seen = HashSet::new();
    while seen.len() < n {
        let parts = rng.gen_range(2..=5);
        let w: String = (0..parts)
            .map(|_| SYL[rng.gen_range(0..SYL.len())])
            .collect();
        if (3..=12).contains(&w.len()) {
            seen.insert(w);
        }
    }
    let mut v: Vec<String> = seen.into_iter().collect();
    v.sort();
    v
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("nova-bench-search-{tag}-{}", Uuid::new_v4()))
}

pub async fn run(args: Args) -> Result<(), Error> {
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: Args) -> Result<(), Error> {
    let mut rng = StdRng::seed_from_u64(13);
    let words = vocabulary(&mut rng, 20_000);
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    let author = Uuid::now_v7();
    let mut events = Vec::with_capacity(args.posts);
    for i in 0..args.posts {
        let n = rng.gen_range(5..=25);
        // Zipf-ish: low indexes are common words.
        let content: Vec<&str> = (0..n)
            .map(|_| {
                let r: f64 = rng.gen();
                &words[((r * r * r) * words.len() as f64) as usize % words.len()][..]
            })
            .collect();
        let post_id = Uuid::now_v7();
        let event = PostEvent::Created(PostCreated {
            post_id,
            author_id: author,
            content: content.join(" "),
            media_urls: vec![],
            mentions: vec![],
            created_at: start + chrono::Duration::seconds(i as i64),
        });
        events.push(RecordedEvent {
            domain: Domain::Post,
            position: i as i64 + 1,
            event_id: Uuid::now_v7(),
            aggregate_id: post_id,
            aggregate_type: "post".to_owned(),
            version: 1,
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: event.to_payload(),
            metadata: EventMetadata::default(),
            recorded_at: chrono::Utc::now(),
        });
    }

    // (a) raw: the same documents straight into tantivy.
    let raw_dir = temp_dir("raw");
    let raw_index = SearchIndex::open(&raw_dir)?;
    let f = raw_index.fields();
    let docs: Vec<TantivyDocument> = events
        .iter()
        .map(|e| {
            let PostEvent::Created(p) = e.decode::<PostEvent>().expect("built above") else {
                unreachable!("only creations are built")
            };
            let mut d = TantivyDocument::default();
            let (hi, lo) = p.post_id.as_u64_pair();
            d.add_text(f.kind, POST);
            d.add_text(f.id, p.post_id.to_string());
            d.add_text(f.author, p.author_id.to_string());
            d.add_text(f.text, &p.content);
            d.add_text(f.content, &p.content);
            d.add_i64(f.created_at, p.created_at.timestamp_micros());
            d.add_u64(f.id_hi, hi);
            d.add_u64(f.id_lo, lo);
            d
        })
        .collect();
    let mut writer: IndexWriter = raw_index
        .index()
        .writer_with_num_threads(1, WRITER_MEMORY)?;
    let t = Instant::now();
    for chunk in docs.chunks(BATCH) {
        for d in chunk {
            writer.add_document(d.clone())?;
        }
        writer.commit()?;
    }
    let raw = Throughput::new(docs.len() as u64, t.elapsed());
    drop(writer);
    drop(docs);

    // (a) projector.
    let dir = temp_dir("projector");
    let index = SearchIndex::open(&dir)?;
    let mut projector = SearchProjector::open(index.clone())?;
    let t = Instant::now();
    for chunk in events.chunks(BATCH) {
        for e in chunk {
            projector.apply(e)?;
        }
        projector.commit()?;
    }
    let projector_rate = Throughput::new(events.len() as u64, t.elapsed());
    drop(projector);
    index.refresh()?;
    let segments = index.reader().searcher().segment_readers().len();

    // (b) queries.
    let common = &words[..2_000];
    let mut queries = Vec::with_capacity(args.queries);
    for i in 0..args.queries {
        let mut w: Vec<String> = (0..rng.gen_range(1..=2))
            .map(|_| common[rng.gen_range(0..common.len())].clone())
            .collect();
        let last = w.len() - 1;
        match i % 3 {
            1 if w[last].len() >= 5 => {
                // One transposition in the middle.
                let mut c: Vec<char> = w[last].chars().collect();
                let k = c.len() / 2;
                c.swap(k - 1, k);
                w[last] = c.into_iter().collect();
            }
            2 if w[last].len() >= 4 => {
                let cut = w[last].len() - 2;
                w[last].truncate(cut);
            }
            _ => {}
        }
        queries.push(w.join(" "));
    }
    let hidden = HashSet::new();
    let mut samples = Vec::with_capacity(queries.len());
    let mut term_samples = Vec::with_capacity(queries.len());
    let searcher = index.reader().searcher();
    let text = index.fields().text;
    for q in &queries {
        let req = SearchRequest::parse(Some(q), Some("posts"), 20, None)?;
        let t = Instant::now();
        let page = search(&index, &req, &hidden)?;
        samples.push(t.elapsed());
        std::hint::black_box(page);
        let first = req.words.first().cloned().unwrap_or_default();
        let t = Instant::now();
        let top = searcher.search(
            &TermQuery::new(
                Term::from_field_text(text, &first),
                IndexRecordOption::WithFreqs,
            ),
            &TopDocs::with_limit(20).order_by_score(),
        )?;
        term_samples.push(t.elapsed());
        std::hint::black_box(top);
    }
    let report = Report {
        posts: args.posts,
        projector_vs_raw: ratio(projector_rate.per_sec, raw.per_sec),
        raw,
        projector: projector_rate,
        segments,
        query: Percentiles::new(samples),
        raw_term_query: Percentiles::new(term_samples),
    };
    let _ = std::fs::remove_dir_all(&raw_dir);
    let _ = std::fs::remove_dir_all(&dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("(a) indexing {} posts, commit every {BATCH}", report.posts);
    print_throughput_table(
        "projector",
        [(
            "tantivy",
            &report.raw,
            &report.projector,
            report.projector_vs_raw,
        )],
    );
    println!("segments after indexing: {}", report.segments);
    println!();
    println!(
        "(b) query latency at {} posts ({} queries)",
        report.posts, report.query.samples
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9}",
        "path", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for (path, p) in [
        ("raw term query", &report.raw_term_query),
        ("search (typos, rank)", &report.query),
    ] {
        println!(
            "{:<22} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            path, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
        );
    }
    Ok(())
}

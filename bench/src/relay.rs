//! `relay`: how fast the relay moves committed events from the store to JetStream, against how
//! fast the same messages can be published at all.
//!
//! Per backend, in one fresh database, N `user.registered` events (each on its own aggregate)
//! are appended through the store first (not timed). Then, **in sequence**:
//! - **raw**: the exact messages the relay would send (same subjects, envelope payloads and
//!   headers, including `Nats-Msg-Id`), built from the stored events before the clock starts,
//!   are published to a fresh namespace's stream with async JetStream publishes, pipelined like
//!   the relay: windows of 256 sent in order, then all of the window's acks awaited
//!   concurrently. This is the raw async publish limit of this client and server;
//! - **relay**: a [`Relay`] on another fresh namespace drains the same N events with
//!   `relay_once` rounds (lease, read 256 after the checkpoint, encode, publish pipelined, await
//!   every ack, save the checkpoint) until it reports idle.
//!
//! Both streams are checked to hold exactly N messages afterwards, and the relay's checkpoint
//! to have reached the head. Reported: events/s of both and the ratio relay/raw; and, to show
//! where a relay round's time goes, per round of 256: the raw publish (send + acks), the time
//! to encode the messages (measured while building the raw path's messages), the time to read
//! them from the store (a separate pass of `EventStore::read` in pages of 256, after the
//! relay), and the rest (lease, checkpoint save, backlog gauge, scheduling).

use std::future::IntoFuture;
use std::time::Instant;

use async_nats::jetstream::message::PublishMessage;
use nova_event_schemas::Domain;
use nova_infra::db::{Database, Engine};
use nova_infra::nats::Envelope;
use nova_infra::relay::{Relay, Round, BATCH};
use nova_infra::store::{ReadFilter, RecordedEvent};
use serde::Serialize;

use crate::harness::count_bar;
use crate::stats::{print_throughput_table, ratio, Throughput};
use crate::target::{connect_nats, engine_name, open_fresh, BackendChoice, Namespace, Nats};
use crate::workload::{pre_append, read_all};
use crate::Error;

/// Messages in flight per window of the raw publisher: the relay's own batch size.
const WINDOW: usize = BATCH as usize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events appended first and then published by each path.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub events: u64,
    /// Backends to benchmark.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// Print one JSON object with every figure instead of the table (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    events: u64,
    event_type: &'static str,
    window: usize,
    order: &'static str,
    backends: Vec<BackendReport>,
}

#[derive(Debug, Serialize)]
struct BackendReport {
    backend: &'static str,
    raw_operation: &'static str,
    relay_operation: &'static str,
    raw: Throughput,
    relay: Throughput,
    /// Rounds `relay_once` reported as `Published`.
    relay_rounds: u64,
    /// relay events/s divided by raw events/s (absent when raw did nothing).
    relay_to_raw: Option<f64>,
    /// Where a relay round's time goes, in ms per round of 256 events.
    per_round_ms: RoundBreakdown,
}

#[derive(Debug, Serialize)]
struct RoundBreakdown {
    relay: f64,
    raw_publish: f64,
    encode: f64,
    store_read: f64,
    /// relay − (raw publish + encode + store read): lease, checkpoint save, backlog gauge.
    rest: f64,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let nats = connect_nats().await?;
    let mut backends = Vec::new();
    for engine in args.backend.engines() {
        let fresh = open_fresh(engine).await?;
        let result = bench_backend(engine, &fresh.db, &nats, &args).await;
        fresh.close().await;
        backends.push(result?);
    }
    let report = Report {
        scenario: "relay",
        events: args.events,
        event_type: "user.registered, one new aggregate per event",
        window: WINDOW,
        order: "per backend: pre-append (untimed), then raw, then relay",
        backends,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn bench_backend(
    engine: Engine,
    db: &Database,
    nats: &Nats,
    args: &Args,
) -> Result<BackendReport, Error> {
    let name = engine_name(engine);
    let progress = !args.json;
    let head = pre_append(&db.store, args.events, &format!("{name} append"), progress).await?;
    let events = read_all(&db.store).await?;
    if events.len() as u64 != args.events || events.last().map(|e| e.position) != Some(head) {
        return Err(format!(
            "{name}: expected {} stored events up to position {head}, read {}",
            args.events,
            events.len()
        )
        .into());
    }

    let raw_ns = nats.namespace().await?;
    let started = Instant::now();
    let messages = relay_messages(&raw_ns, &events);
    let encode = started.elapsed();
    let raw = publish_raw(&raw_ns, messages, &format!("{name} raw"), progress).await;
    let raw = match raw {
        Ok(r) => check_stored(&raw_ns, args.events, "raw").await.map(|()| r),
        Err(e) => Err(e),
    };
    raw_ns.delete().await;
    let raw = raw.map_err(|e| format!("{name} raw: {e}"))?;

    let relay_ns = nats.namespace().await?;
    let relayed = drain_relay(db, &relay_ns, head, &format!("{name} relay"), progress).await;
    let relayed = match relayed {
        Ok(r) => check_stored(&relay_ns, args.events, "relay")
            .await
            .map(|()| r),
        Err(e) => Err(e),
    };
    relay_ns.delete().await;
    let (relay, relay_rounds) = relayed.map_err(|e| format!("{name} relay: {e}"))?;

    let started = Instant::now();
    let mut after = 0;
    loop {
        let page = db
            .store
            .read(
                Domain::User,
                &ReadFilter {
                    after_position: after,
                    limit: BATCH,
                    ..Default::default()
                },
            )
            .await?;
        match page.last() {
            Some(e) => after = e.position,
            None => break,
        }
    }
    let store_read = started.elapsed();

    let rounds = args.events.div_ceil(WINDOW as u64).max(1) as f64;
    let per_round = |seconds: f64| (seconds * 1000.0 / rounds * 1000.0).round() / 1000.0;
    let relay_ms = per_round(relay.seconds);
    let raw_ms = per_round(raw.seconds);
    let encode_ms = per_round(encode.as_secs_f64());
    let read_ms = per_round(store_read.as_secs_f64());
    let per_round_ms = RoundBreakdown {
        relay: relay_ms,
        raw_publish: raw_ms,
        encode: encode_ms,
        store_read: read_ms,
        rest: ((relay_ms - raw_ms - encode_ms - read_ms) * 1000.0).round() / 1000.0,
    };

    Ok(BackendReport {
        backend: name,
        raw_operation: "pre-built messages: JetStream send_publish of 256 in order, then await \
                        the 256 acks concurrently; repeat",
        relay_operation: "Relay::relay_once until idle (lease, read 256, encode, pipelined \
                          publish, await acks, save checkpoint)",
        relay_to_raw: ratio(relay.per_sec, raw.per_sec),
        raw,
        relay,
        relay_rounds,
        per_round_ms,
    })
}

/// The message the relay sends for each event: same subject, payload and headers.
fn relay_messages(ns: &Namespace, events: &[RecordedEvent]) -> Vec<(String, PublishMessage)> {
    let mut prev = 0;
    events
        .iter()
        .map(|event| {
            let envelope = Envelope {
                prev_position: prev,
                event: event.clone(),
            };
            prev = event.position;
            let message = PublishMessage::build()
                .payload(envelope.encode())
                .headers(envelope.headers());
            (ns.names().subject(Domain::User, &event.event_type), message)
        })
        .collect()
}

async fn publish_raw(
    ns: &Namespace,
    messages: Vec<(String, PublishMessage)>,
    label: &str,
    progress: bool,
) -> Result<Throughput, Error> {
    let bar = count_bar(label, messages.len() as u64, progress);
    let mut messages = messages.into_iter().peekable();
    let js = ns.js();
    let started = Instant::now();
    let mut acked = 0u64;
    while messages.peek().is_some() {
        let mut acks = Vec::with_capacity(WINDOW);
        for (subject, message) in messages.by_ref().take(WINDOW) {
            acks.push(js.send_publish(subject, message).await?);
        }
        for result in futures::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await
        {
            result?;
            acked += 1;
        }
        bar.set_position(acked);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Throughput::new(acked, elapsed))
}

async fn drain_relay(
    db: &Database,
    ns: &Namespace,
    head: i64,
    label: &str,
    progress: bool,
) -> Result<(Throughput, u64), Error> {
    let relay = Relay::new(
        db.store.clone(),
        ns.js().clone(),
        ns.names().clone(),
        db.any.clone(),
        Domain::User,
    );
    let total = head.max(0) as u64;
    let bar = count_bar(label, total, progress);
    let started = Instant::now();
    let mut published = 0u64;
    let mut rounds = 0u64;
    loop {
        match relay.relay_once().await? {
            Round::Published(n) => {
                published += n as u64;
                rounds += 1;
                bar.set_position(published);
            }
            Round::Idle => break,
            Round::NotLeader => return Err("the benchmark relay is not the leader".into()),
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let checkpoint = Relay::checkpoint(&db.any, Domain::User).await?;
    if checkpoint != head {
        return Err(format!("relay checkpoint {checkpoint} after draining, head is {head}").into());
    }
    Ok((Throughput::new(published, elapsed), rounds))
}

async fn check_stored(ns: &Namespace, expected: u64, path: &str) -> Result<(), Error> {
    let stored = ns.stored(Domain::User).await?;
    if stored != expected {
        return Err(format!("{path} stream holds {stored} messages, expected {expected}").into());
    }
    Ok(())
}

fn print_table(report: &Report) {
    println!(
        "relay: {} events ({}), {}; raw and relay each on a fresh stream",
        report.events, report.event_type, report.order
    );
    println!();
    print_throughput_table(
        "relay",
        report
            .backends
            .iter()
            .map(|b| (b.backend, &b.raw, &b.relay, b.relay_to_raw)),
    );
    println!();
    println!(
        "{:<9} {:>10} {:>12} {:>8} {:>11} {:>8}   (ms per round of {})",
        "backend", "relay", "raw publish", "encode", "store read", "rest", report.window
    );
    for b in &report.backends {
        let r = &b.per_round_ms;
        println!(
            "{:<9} {:>10.2} {:>12.2} {:>8.2} {:>11.2} {:>8.2}",
            b.backend, r.relay, r.raw_publish, r.encode, r.store_read, r.rest
        );
    }
    println!();
    if let Some(b) = report.backends.first() {
        println!("{:<8}{}", "raw:", b.raw_operation);
        println!("{:<8}{}", "relay:", b.relay_operation);
    }
    println!(
        "{:<8}relay − raw publish − encode − store read: lease, checkpoint save, backlog gauge",
        "rest:"
    );
}

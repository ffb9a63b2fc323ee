//! Database round trips per request (issue 14): every statement sqlx runs inside a request's
//! `http` span is counted, authentication included, for the API's hot routes on PostgreSQL,
//! and each route is held to a budget, so a change that adds a round trip to a hot path fails
//! here instead of showing up as latency under load. Appends are counted apart: the store's
//! appender task commits them in batches shared by concurrent requests (ADR 0001), so they
//! belong to no single request.
//!
//! PostgreSQL only: the SQLite driver runs statements on a worker thread of its own, outside
//! the request's span, and a statement there is a function call, not a round trip.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use common::spawn;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// `"METHOD route"` of a request's span and the statements run inside it.
struct Request {
    name: String,
    statements: Vec<String>,
}

/// The statement of a sqlx event (its `db.statement`, else its summary).
#[derive(Default)]
struct Statement(String);

impl Visit for Statement {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "db.statement" || (field.name() == "summary" && self.0.is_empty()) {
            self.0 = format!("{value:?}");
        }
    }
}

#[derive(Default)]
struct Route {
    method: String,
    route: String,
}

impl Visit for Route {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "method" => self.method = format!("{value:?}"),
            "route" => self.route = format!("{value:?}").trim_matches('"').to_owned(),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "route" {
            self.route = value.to_owned();
        }
    }
}

type Done = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// Counts `sqlx::query` events per `http` span; a closed span reports to `done`.
struct Counter {
    done: Done,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Counter {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "http" {
            return;
        }
        let mut route = Route::default();
        attrs.record(&mut route);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Request {
                name: format!("{} {}", route.method, route.route),
                statements: Vec::new(),
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("sqlx::query") {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(request) = span.extensions_mut().get_mut::<Request>() {
                let mut statement = Statement::default();
                event.record(&mut statement);
                request.statements.push(statement.0);
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(r) = span.extensions_mut().remove::<Request>() {
                self.done.lock().unwrap().push((r.name, r.statements));
            }
        }
    }
}

fn counted() -> Done {
    static DONE: OnceLock<Done> = OnceLock::new();
    DONE.get_or_init(|| {
        let done = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Counter { done: done.clone() });
        tracing::subscriber::set_global_default(subscriber)
            .expect("this test binary installs the only subscriber");
        done
    })
    .clone()
}

/// Most statements each route may run inside its request (authentication included).
const BUDGET: &[(&str, u64)] = &[
    // Authentication: one read of the caller's user stream after the cached version.
    ("GET /v1/users/me", 3),
    ("GET /v1/feed", 4),
    ("GET /v1/notifications", 3),
    ("GET /v1/posts/{id}", 2),
    ("GET /v1/users/{id}/posts", 3),
    ("POST /v1/posts", 2),
    ("PUT /v1/posts/{id}/like", 4),
    ("PUT /v1/users/{id}/follow", 3),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_routes_stay_within_their_round_trips() {
    let done = counted();
    let app = spawn(Engine::Postgres).await;
    let (alice, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    common::caught_up(&app, "user_directory", Domain::User).await;
    let ok = |res: reqwest::Response| async move {
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{status} {body}");
        body
    };
    ok(app
        .put(&format!("/v1/users/{alice}/follow"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap())
    .await;
    let post = ok(app
        .post("/v1/posts")
        .bearer_auth(&a)
        .json(&json!({"content": "counting round trips"}))
        .send()
        .await
        .unwrap())
    .await;
    let post = post["post_id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        common::caught_up(&app, "post_view", Domain::Post).await;
        ok(app
            .put(&format!("/v1/posts/{post}/like"))
            .bearer_auth(&b)
            .send()
            .await
            .unwrap())
        .await;
        for path in [
            "/v1/users/me".to_owned(),
            "/v1/feed".to_owned(),
            "/v1/notifications".to_owned(),
            format!("/v1/posts/{post}"),
            format!("/v1/users/{alice}/posts"),
        ] {
            let res = app.get(&path).bearer_auth(&b).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
        }
    }
    app.stop().await;

    // The most each route needed (the first requests warm the caches; budgets hold for all).
    let mut most: BTreeMap<String, u64> = BTreeMap::new();
    for (name, statements) in done.lock().unwrap().iter() {
        let e = most.entry(name.clone()).or_default();
        if statements.len() as u64 > *e {
            *e = statements.len() as u64;
            println!("{name}:");
            for s in statements {
                println!("    {}", s.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    println!("{:<34} {:>10} {:>7}", "route", "statements", "budget");
    let mut over = Vec::new();
    for (route, budget) in BUDGET {
        let n = most.get(*route).copied();
        println!(
            "{route:<34} {:>10} {budget:>7}",
            n.map_or("-".into(), |n| n.to_string())
        );
        match n {
            None => over.push(format!("{route}: not measured")),
            Some(n) if n > *budget => over.push(format!("{route}: {n} > {budget}")),
            Some(_) => {}
        }
    }
    assert!(over.is_empty(), "{over:?}");
}

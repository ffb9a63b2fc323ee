//! End-to-end tests of `GET /v1/search` (API.md "Read views", ADR 0013), over real HTTP, on both
//! engines: typo tolerance by word length, transpositions, prefixes, ranking, edits, deletes,
//! deactivation, blocks, pagination, bad input and read-your-writes; and a rebuild of the index
//! that holds the same documents as the live one.

mod common;

use std::collections::BTreeSet;

use common::*;
use nova_infra::db::Engine;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    typo_table_and_ranking,
    edits_deletes_deactivation_and_blocks,
    pages_return_each_hit_once,
    bad_input_is_400,
    rebuild_equals_live,
    rebuild_while_serving,
);

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Registers `name` (with a display name) and logs in; waits until the user directory has them
/// (a post needs an active author there).
async fn member(app: &TestApp, name: &str, display: &str) -> (Uuid, String, String) {
    let res = app
        .post("/v1/users")
        .json(&json!({"username": name, "password": PASSWORD, "display_name": display}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let pos = position(&res);
    let id: Uuid = res.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let res = app.login(name, PASSWORD).await;
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let res = app
        .get(&format!("/v1/users/{id}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    (id, token, pos)
}

async fn create(app: &TestApp, token: &str, content: &str) -> (Uuid, String) {
    let res = call(
        app,
        Method::POST,
        "/v1/posts",
        token,
        Some(json!({ "content": content })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let pos = position(&res);
    let v: Value = res.json().await.unwrap();
    (v["post_id"].as_str().unwrap().parse().unwrap(), pos)
}

/// `GET /v1/search?<query>` answered 200, after the index has applied `min`.
async fn search(app: &TestApp, token: &str, query: &str, min: Option<&str>) -> Value {
    let mut req = app.get(&format!("/v1/search?{query}")).bearer_auth(token);
    if let Some(m) = min {
        req = req.header("X-Nova-Min-Position", m);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{query}");
    res.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<Uuid> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn q(s: &str) -> String {
    url_encode(s)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn typo_table_and_ranking(engine: Engine) {
    let app = spawn(engine).await;
    let (_, token, _) = member(&app, "reader", "Reader").await;
    let (_, w, _) = member(&app, "writer", "Writer").await;
    // One post per word length class, with words nothing else contains.
    let (cat, _) = create(&app, &w, "my cat sleeps").await; // 3 letters
    let (hello, _) = create(&app, &w, "Hello, world!").await; // 5 letters
    let (elephant, _) = create(&app, &w, "an elephant walks").await; // 8 letters
    let (beautiful, _) = create(&app, &w, "a beautiful morning").await; // 9 letters
    let (cafe, last) = create(&app, &w, "Café Crème at noon").await;
    let min = Some(last.as_str());

    // (query, expected post, or none)
    let table: &[(&str, Option<Uuid>)] = &[
        // 1–4 characters: exact only (case and punctuation do not matter).
        ("cat", Some(cat)),
        ("CAT!", Some(cat)),
        ("cot sleeps", None),
        ("act sleeps", None),
        // 5–8: one edit of each kind, transposition included; two edits are too many.
        ("hello", Some(hello)),
        ("helo", None), // 4 characters: exact only
        ("hallo world", Some(hello)),
        ("hellox world", Some(hello)),
        ("ehllo world", Some(hello)),
        ("hxllx world", None),
        ("elephnat", Some(elephant)),
        ("elepant walks", Some(elephant)),
        ("eleqhanx", None),
        // 9 or more: two edits.
        ("beautiful", Some(beautiful)),
        ("beuatiful", Some(beautiful)),
        ("baeutifel", Some(beautiful)),
        ("bxautixux", None),
        // ASCII folding.
        ("cafe creme", Some(cafe)),
        ("CAFÉ", Some(cafe)),
        // The last word is also a prefix; earlier words are not.
        ("beauti", Some(beautiful)),
        ("my ca", Some(cat)),
        ("eleph walks", None),
        ("mornin", Some(beautiful)),
    ];
    for (query, want) in table {
        let page = search(&app, &token, &format!("q={}&type=posts", q(query)), min).await;
        let got = ids(&page);
        match want {
            Some(id) => assert_eq!(got, vec![*id], "{query}"),
            None => assert!(got.is_empty(), "{query}: {page}"),
        }
    }

    // Ranking: exact before one typo before two; then BM25; then newest.
    let (_, r, _) = member(&app, "ranker", "Ranker").await;
    let (exact, _) = create(&app, &r, "wonderland").await;
    let (one, _) = create(&app, &r, "wonderlnd").await;
    let (two, _) = create(&app, &r, "wondrlnad").await;
    let (older, _) = create(&app, &r, "galaxy galaxy galaxy").await;
    let (rare, _) = create(&app, &r, "galaxy of many other filler words here").await;
    let (newer, last) = create(&app, &r, "galaxy galaxy galaxy").await;
    let page = search(&app, &token, "q=wonderland&type=posts", Some(&last)).await;
    assert_eq!(ids(&page), vec![exact, one, two]);
    let typos: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["typos"].as_u64().unwrap())
        .collect();
    assert_eq!(typos, vec![0, 1, 2]);
    let page = search(&app, &token, "q=galaxy&type=posts", None).await;
    assert_eq!(ids(&page), vec![newer, older, rare]);
    assert_eq!(page["items"][0]["type"], "post");
    assert!(page["items"][0]["score"].as_f64().unwrap() > 0.0);

    // Users by username and display name, with typos; `type` narrows.
    let (wu, _, pos) = member(&app, "marguerite", "Daisy Flower").await;
    let page = search(&app, &token, "q=margueirte&type=users", Some(&pos)).await;
    assert_eq!(ids(&page), vec![wu]);
    assert_eq!(page["items"][0]["type"], "user");
    assert_eq!(page["items"][0]["username"], "marguerite");
    assert_eq!(page["items"][0]["display_name"], "Daisy Flower");
    let page = search(&app, &token, "q=daisy", None).await;
    assert_eq!(ids(&page), vec![wu]);
    let page = search(&app, &token, "q=daisy&type=posts", None).await;
    assert!(ids(&page).is_empty());
    app.stop().await;
}

async fn edits_deletes_deactivation_and_blocks(engine: Engine) {
    let app = spawn(engine).await;
    let (_, reader, _) = member(&app, "reader", "Reader").await;
    let (_, a, _) = member(&app, "alice", "Alice").await;
    let (bob, b, _) = member(&app, "bob", "Bob").await;
    let (p, _) = create(&app, &a, "original pineapple").await;
    let (gone, _) = create(&app, &a, "doomed pineapple").await;
    let (bobs, last) = create(&app, &b, "bobs pineapple").await;
    let page = search(&app, &reader, "q=pineapple", Some(&last)).await;
    assert_eq!(ids(&page).len(), 3);

    // An edit re-indexes: the old words no longer match, the new ones do.
    let res = call(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{p}"),
        &a,
        Some(json!({"content": "edited mango"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    assert!(!ids(&search(&app, &reader, "q=original", Some(&pos)).await).contains(&p));
    assert_eq!(ids(&search(&app, &reader, "q=mango", None).await), vec![p]);

    // A delete removes.
    let res = call(&app, Method::DELETE, &format!("/v1/posts/{gone}"), &a, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    assert!(!ids(&search(&app, &reader, "q=doomed", Some(&pos)).await).contains(&gone));

    // Blocks hide the posts of users blocked by or blocking the reader.
    let (_, blocker, _) = member(&app, "blocker", "Blocker").await;
    let res = call(
        &app,
        Method::PUT,
        &format!("/v1/users/{bob}/block"),
        &blocker,
        None,
    )
    .await;
    assert!(res.status().is_success(), "{}", res.status());
    let pos = position(&res);
    let page = search(&app, &blocker, "q=pineapple", Some(&pos)).await;
    assert!(!ids(&page).contains(&bobs), "{page}");
    // Bob, blocked, does not see the blocker's posts either.
    let (mine, pos) = create(&app, &blocker, "blockers pineapple").await;
    let page = search(&app, &b, "q=pineapple", Some(&pos)).await;
    assert!(!ids(&page).contains(&mine));
    assert!(ids(&page).contains(&bobs));
    // Others see both.
    let page = search(&app, &reader, "q=pineapple", None).await;
    assert!(ids(&page).contains(&mine) && ids(&page).contains(&bobs));

    // Deactivation removes the user and their posts.
    let res = call(&app, Method::DELETE, "/v1/users/me", &b, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    let page = search(&app, &reader, "q=pineapple", Some(&pos)).await;
    assert!(!ids(&page).contains(&bobs), "{page}");
    let page = search(&app, &reader, "q=bob&type=users", None).await;
    assert!(!ids(&page).contains(&bob));
    app.stop().await;
}

async fn pages_return_each_hit_once(engine: Engine) {
    let app = spawn(engine).await;
    let (_, reader, _) = member(&app, "reader", "Reader").await;
    let (_, w, _) = member(&app, "writer", "Writer").await;
    let mut want = BTreeSet::new();
    let mut last = String::new();
    for i in 0..23 {
        // Different lengths give different BM25 scores; repeated ones tie and fall to recency.
        let filler = "x ".repeat(i % 4);
        let (id, pos) = create(&app, &w, &format!("zebra {filler}")).await;
        want.insert(id);
        last = pos;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("q=zebra&limit=5&cursor={c}"),
            None => "q=zebra&limit=5".to_owned(),
        };
        let page = search(&app, &reader, &query, Some(&last)).await;
        seen.extend(ids(&page));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23, "each hit once");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), want);
    // The pages in a row equal one big page.
    let all = search(&app, &reader, "q=zebra&limit=100", None).await;
    assert_eq!(ids(&all), seen);
    app.stop().await;
}

async fn bad_input_is_400(engine: Engine) {
    let app = spawn(engine).await;
    let (_, token, _) = member(&app, "reader", "Reader").await;
    let res = app.get("/v1/search?q=x").send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let long = "a".repeat(201);
    for (query, field) in [
        ("", "q"),
        ("q=", "q"),
        ("q=%20%20", "q"),
        (format!("q={long}").as_str(), "q"),
        ("q=x&type=groups", "type"),
        ("q=x&type=", "type"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=101", "limit"),
        ("q=x&limit=abc", "limit"),
        ("q=x&cursor=zz", "cursor"),
        ("q=x&cursor=", "cursor"),
    ] {
        let res = app
            .get(&format!("/v1/search?{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let err = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(err["details"]["field"], field, "{query}");
    }
    let res = app
        .get("/v1/search?q=x&color=red")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_query").await;
    // 200 characters are fine; so is a query of punctuation only (no words: no hits).
    let ok = "a".repeat(200);
    assert!(ids(&search(&app, &token, &format!("q={ok}"), None).await).is_empty());
    assert!(ids(&search(&app, &token, "q=%21%3F", None).await).is_empty());
    // The OpenAPI document lists the route.
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/search"]["get"].is_object());
    app.stop().await;
}

/// The generation `CURRENT` names under a search root.
fn served(root: &std::path::Path) -> std::path::PathBuf {
    nova_infra::search::SearchRoot::new(root).current().unwrap()
}

/// All documents of an index: (kind-less) ids with their stored fields.
fn documents(dir: &std::path::Path) -> Vec<(String, String)> {
    use tantivy::collector::TopDocs;
    use tantivy::query::AllQuery;
    use tantivy::schema::Value as _;
    let index = nova_infra::search::SearchIndex::open(dir).unwrap();
    index.refresh().unwrap();
    let f = index.fields();
    let searcher = index.reader().searcher();
    let mut out = Vec::new();
    for (_, addr) in searcher
        .search(&AllQuery, &TopDocs::with_limit(100_000).order_by_score())
        .unwrap()
    {
        let doc: tantivy::TantivyDocument = searcher.doc(addr).unwrap();
        let text = |field| {
            doc.get_all(field)
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
                .join("|")
        };
        out.push((
            text(f.id),
            format!(
                "{}/{}/{}/{}",
                text(f.author),
                text(f.username),
                text(f.display_name),
                text(f.content)
            ),
        ));
    }
    out.sort();
    out
}

async fn rebuild_equals_live(engine: Engine) {
    let dir = std::env::temp_dir().join(format!("nova-search-live-{}", Uuid::new_v4()));
    let live = dir.clone();
    let app = spawn_configured(engine, move |s| s.search_dir = live).await;
    let (_, a, _) = member(&app, "alice", "Alice A").await;
    let (_, b, _) = member(&app, "bob", "Bob B").await;
    let (p1, _) = create(&app, &a, "first post").await;
    create(&app, &a, "second post").await;
    create(&app, &b, "bobs post").await;
    let res = call(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{p1}"),
        &a,
        Some(json!({"content": "first, edited"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(&app, Method::DELETE, "/v1/users/me", &b, None).await;
    let pos = position(&res);
    // Wait until the live index has everything: the deactivation, and the hiding of bob's
    // posts that the post domain's policy appends in reaction to it.
    search(&app, &a, "q=post", Some(&pos)).await;
    common::caught_up(
        &app,
        nova_policies::post::NAME,
        nova_event_schemas::Domain::User,
    )
    .await;
    let head = app
        .db
        .store
        .head(nova_event_schemas::Domain::Post)
        .await
        .unwrap();
    search(&app, &a, "q=post", Some(&format!("post:{head}"))).await;
    let mut app = app;
    app.stop_server().await;

    let fresh = std::env::temp_dir().join(format!("nova-search-rebuild-{}", Uuid::new_v4()));
    let positions = nova_projections::search::rebuild_into(&fresh, &app.db.store)
        .await
        .unwrap();
    let live_index = nova_infra::search::SearchIndex::open(&served(&dir)).unwrap();
    assert_eq!(live_index.positions().unwrap(), positions);
    let live_docs = documents(&served(&dir));
    assert!(live_docs.len() >= 4, "{live_docs:?}");
    assert_eq!(documents(&fresh), live_docs);
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh);
}

/// kill -9 of a real `nova project search` in the middle of indexing, then a restart: every
/// post is in the index exactly once and the commit payload equals the last event applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_indexing_then_restart() {
    use nova_event_schemas::post::{PostCreated, PostEvent};
    use nova_event_schemas::{Domain, EventMetadata};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let testdb = nova_infra::testing::TestDb::new(Engine::Postgres).await;
    let db = nova_infra::db::Database::connect(&testdb.url)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    const POSTS: usize = 20_000;
    let author = Uuid::now_v7();
    let mut want = BTreeSet::new();
    for chunk in 0..POSTS / 1000 {
        let mut streams = Vec::new();
        for i in 0..1000 {
            let post_id = Uuid::now_v7();
            want.insert(post_id.to_string());
            streams.push((
                post_id,
                "post",
                0,
                vec![PostEvent::Created(PostCreated {
                    post_id,
                    author_id: author,
                    content: format!("crash test post {chunk} {i} lorem ipsum dolor"),
                    media_urls: vec![],
                    mentions: vec![],
                    created_at: chrono::Utc::now(),
                })],
            ));
        }
        db.store
            .append(streams, EventMetadata::default())
            .await
            .unwrap();
    }
    let head = db.store.head(Domain::Post).await.unwrap();
    let dir = std::env::temp_dir().join(format!("nova-search-crash-{}", Uuid::new_v4()));
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_nova"))
            .args(["project", "search"])
            .env("NOVA_DATABASE_URL", &testdb.url)
            .env("NOVA_SEARCH_DIR", &dir)
            .env("NOVA_LOG", "warn")
            .env_remove("NOVA_NATS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nova starts")
    };
    let mirrored = |db: nova_infra::db::Database| async move {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT position FROM projection_checkpoints WHERE projection = 'search' AND domain = 'post'",
        )
        .fetch_optional(&db.any)
        .await
        .unwrap();
        row.map_or(0, |r| r.0)
    };

    // Killed once some batches are committed and before all are.
    let mut child = start();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at = mirrored(db.clone()).await;
        if at > 0 {
            assert!(at < head, "indexing finished before the kill; raise POSTS");
            break;
        }
        assert!(Instant::now() < deadline, "indexing did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let index = nova_infra::search::SearchIndex::open(&served(&dir)).unwrap();
    let at_kill = index.positions().unwrap().post;
    assert!(at_kill < head, "killed mid-indexing");

    // Restarted: it resumes from the commit payload and finishes.
    let mut child = start();
    let deadline = Instant::now() + Duration::from_secs(300);
    while mirrored(db.clone()).await < head {
        assert!(Instant::now() < deadline, "indexing did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let index = nova_infra::search::SearchIndex::open(&served(&dir)).unwrap();
    index.refresh().unwrap();
    assert_eq!(
        index.positions().unwrap().post,
        head,
        "checkpoint = last event"
    );
    let docs = documents(&served(&dir));
    let ids: Vec<String> = docs.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), POSTS, "each post once");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), want);
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The index generations under a root (`gen-*` directories).
fn generations(root: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("gen-"))
        .collect();
    out.sort();
    out
}

/// `POST /v1/projections/search/rebuild` while the API serves and the live projector runs: a
/// new generation is built beside the served one, taken over by the live projector and served;
/// searches during the rebuild all answer, with the same hits; the old generation is removed;
/// the same documents are indexed; later posts go into the new generation.
async fn rebuild_while_serving(engine: Engine) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = std::env::temp_dir().join(format!("nova-search-swap-{}", Uuid::new_v4()));
    let root = dir.clone();
    let app = spawn_configured(engine, move |s| s.search_dir = root).await;
    let (_, admin, _) = member(&app, "swap_admin", "Admin").await;
    app.user_commands()
        .grant_role(
            &nova_commands::CommandContext::new(None, None),
            "swap_admin",
            nova_event_schemas::user::Role::Admin,
        )
        .await
        .unwrap();
    let (_, a, _) = member(&app, "swapper", "Swap Per").await;
    let mut last = String::new();
    for i in 0..30 {
        last = create(&app, &a, &format!("swapped post number {i}"))
            .await
            .1;
    }
    let before = search(&app, &a, "q=swapped&type=posts&limit=100", Some(&last)).await;
    let before_ids: BTreeSet<Uuid> = ids(&before).into_iter().collect();
    assert_eq!(before_ids.len(), 30);
    let old_generation = generations(&dir);
    assert_eq!(old_generation.len(), 1, "{old_generation:?}");
    let docs_before = documents(&served(&dir));
    // What a rebuild killed half-way leaves behind: the next rebuild removes it.
    let crashed = dir.join(format!("build-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(crashed.join("meta.json"), b"{}").unwrap();

    // Readers search all through the rebuild.
    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (app, stop, reads, a) = (app.clone(), stop.clone(), reads.clone(), a.clone());
        let want = before_ids.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let page = search(&app, &a, "q=swapped&type=posts&limit=100", None).await;
                let got: BTreeSet<Uuid> = ids(&page).into_iter().collect();
                assert_eq!(got, want, "a search during the rebuild");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let res = call(
        &app,
        Method::POST,
        "/v1/projections/search/rebuild",
        &admin,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let list: Value = call(&app, Method::GET, "/v1/projections", &admin, None)
            .await
            .json()
            .await
            .unwrap();
        let row = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["projection"] == "search")
            .cloned()
            .unwrap();
        match row["rebuild"]["state"].as_str() {
            Some("done") => break,
            Some("running") => {}
            other => panic!("rebuild state {other:?}: {row}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rebuild did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);

    let new_generation = generations(&dir);
    assert_eq!(
        new_generation.len(),
        1,
        "old generation swept: {new_generation:?}"
    );
    assert_ne!(new_generation, old_generation);
    assert!(!crashed.exists(), "the dead build was swept");
    assert_eq!(documents(&served(&dir)), docs_before);
    // The live projector writes the new generation now.
    let (fresh, pos) = create(&app, &a, "swapped after the rebuild").await;
    let after = search(&app, &a, "q=swapped&type=posts&limit=100", Some(&pos)).await;
    assert!(ids(&after).contains(&fresh));
    assert_eq!(ids(&after).len(), 31);

    let Ok(app) = Arc::try_unwrap(app) else {
        panic!("app still shared")
    };
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// API and search projector as separate processes on one host, fed over JetStream (a relay
/// process, a private nats-server): the API-only process opens the index without a writer and
/// sees the projector's commits; `nova projections rebuild search` swaps a new generation in
/// while both run (the projector process takes it over), and again with the projector stopped
/// (the command promotes it itself); the API follows each swap and keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_over_jetstream_and_cli_rebuilds() {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    const SECRET: &str = "search-split-secret-search-split-secret-01";
    let testdb = nova_infra::testing::TestDb::new(Engine::Postgres).await;
    let nats = nova_infra::testing::PrivateNats::start();
    let dir = std::env::temp_dir().join(format!("nova-search-split-{}", Uuid::new_v4()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let nova = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nova"));
        cmd.args(args)
            .env("NOVA_DATABASE_URL", &testdb.url)
            .env("NOVA_NATS_URL", nats.url())
            .env("NOVA_SEARCH_DIR", &dir)
            .env("NOVA_JWT_SECRET", SECRET)
            .env("NOVA_LISTEN", format!("127.0.0.1:{port}"))
            .env("NOVA_ARGON2_MEMORY_KIB", "1024")
            .env("NOVA_ARGON2_ITERATIONS", "1")
            .env("NOVA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    };
    let stop = |name: &str, mut child: Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "{name} exited with {status:?}");
    };
    let http = reqwest::Client::new();
    let api = nova(&["serve", "--api-only"]).spawn().unwrap();
    let relay = nova(&["relay"]).spawn().unwrap();
    let projector = nova(&["project"]).spawn().unwrap();
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "splitter", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let registered = position(&res);
    let login: Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"username": "splitter", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let me = login["user_id"].as_str().unwrap().to_owned();
    let res = http
        .get(format!("{base}/v1/users/{me}"))
        .header("X-Nova-Min-Position", &registered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let post = |content: &'static str| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let res = http
                .post(format!("{base}/v1/posts"))
                .bearer_auth(&token)
                .json(&json!({ "content": content }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            let pos = position(&res);
            let id: Uuid = res.json::<Value>().await.unwrap()["post_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            (id, pos)
        }
    };
    let find = |min: Option<String>| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let mut req = http
                .get(format!("{base}/v1/search?q=separately"))
                .bearer_auth(&token);
            if let Some(m) = min {
                req = req.header("X-Nova-Min-Position", m);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let page: Value = res.json().await.unwrap();
            ids(&page).into_iter().collect::<BTreeSet<Uuid>>()
        }
    };
    let (first, pos) = post("indexed separately, over jetstream").await;
    assert_eq!(find(Some(pos)).await, BTreeSet::from([first]));
    let first_generation = generations(&dir);

    // Rebuilt while the projector process runs: it takes the new generation over.
    let out = nova(&["--json", "projections", "rebuild", "search"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["projection"], "search");
    let second_generation = generations(&dir);
    assert_eq!(second_generation.len(), 1, "{second_generation:?}");
    assert_ne!(second_generation, first_generation);
    let (second, pos) = post("also separately, after the swap").await;
    assert_eq!(find(Some(pos)).await, BTreeSet::from([first, second]));

    // Rebuilt with no projector running: the command promotes its generation itself, and the
    // API process follows it.
    stop("projector", projector);
    let (third, _) = post("written separately while no projector runs").await;
    let out = nova(&["projections", "rebuild", "search"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("rebuilt search"));
    let third_generation = generations(&dir);
    assert_eq!(third_generation.len(), 1, "{third_generation:?}");
    assert_ne!(third_generation, second_generation);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = find(None).await;
        if got == BTreeSet::from([first, second, third]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "API did not follow: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop("api", api);
    stop("relay", relay);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The whole API fuzzed from its OpenAPI document (issue 15, ADR 0026), on both engines:
//! Schemathesis (`st`, PyPI `schemathesis`) reads `/openapi.json` of a running Nova and sends
//! requests the document calls valid and requests it calls invalid, with all its checks — no
//! 5xx, every status and body as documented, valid requests accepted, invalid ones refused.
//!
//! The run is bounded (`--max-examples`, a fixed seed) so that it fits in CI; the settings
//! (who calls what, the few rules no schema can state) are in `tests/fuzz/schemathesis.toml`,
//! the generators of server-issued values (cursors, positions) in `tests/fuzz/hooks.py`.
//! `NOVA_FUZZ_EXAMPLES`, `NOVA_FUZZ_SEED` and `NOVA_FUZZ_PHASES` widen or vary a local run;
//! `NOVA_FUZZ_VERBOSE` prints Schemathesis' whole report (warnings included).
//!
//! Without `st` the test is skipped with a loud message, unless `CI=true`: there a missing
//! Schemathesis is a failure (`.ci/run` installs it).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use common::*;
use nova_event_schemas::user::Role;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(fuzz_openapi);

/// Test cases per operation and phase: enough to hit every constraint's edges (the coverage
/// phase adds its boundary cases on top), small enough that both engines finish in a few
/// minutes on two cores.
const EXAMPLES: u32 = 25;
const SEED: u64 = 15;

async fn fuzz_openapi(engine: Engine) {
    let Some(st) = schemathesis() else { return };
    // Rate limits off: the fuzzer's volume is not what they are for (tests/rate_limits.rs).
    let app = spawn_configured(engine, |s| {
        s.rate_limits.user = None;
        s.rate_limits.anonymous = None;
    })
    .await;
    let world = World::new(&app).await;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    // Schemathesis' reports and its cache (`.schemathesis/`) go here, not into the checkout.
    let report = std::env::temp_dir().join(format!("nova-fuzz-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&report).unwrap();
    let examples = env_or("NOVA_FUZZ_EXAMPLES", EXAMPLES);
    let seed = env_or("NOVA_FUZZ_SEED", SEED);
    // Stateful: sequences along the links Schemathesis infers (the document declares none).
    let phases = env_or(
        "NOVA_FUZZ_PHASES",
        "examples,coverage,fuzzing,stateful".to_owned(),
    );
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&st);
    cmd.arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", "all"])
        .args(["--phases", &phases])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        // One worker: with two, Hypothesis' lambda descriptions (`ast.parse` in threads) crashed
        // Python 3.11 once ("AST constructor recursion depth mismatch").
        .args(["--workers", "1", "--no-color", "--request-timeout", "30"])
        .arg("--report-dir")
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", dir.join("hooks.py"))
        .env("NOVA_FUZZ_USER_TOKEN", &world.user_token)
        .env("NOVA_FUZZ_ADMIN_TOKEN", &world.admin_token)
        .env("NOVA_FUZZ_DEACTIVATE_TOKEN", &world.deactivate_token)
        .env("NOVA_FUZZ_LOGOUT_TOKEN", &world.logout_token)
        .env("NOVA_FUZZ_PASSWORD_TOKEN", &world.password_token)
        .env("NOVA_FUZZ_AUTHOR", world.author.to_string())
        .env("NOVA_FUZZ_POST", world.post.to_string())
        .env("NOVA_FUZZ_COMMENT", world.comment.to_string())
        .env("NOVA_FUZZ_CONVERSATION", world.conversation.to_string())
        .env("NOVA_FUZZ_MESSAGE", world.message.to_string())
        .env("NOVA_FUZZ_STREAM", world.stream.to_string())
        .env("NOVA_FUZZ_EXPERIMENT", &world.experiment)
        .current_dir(&report)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = cmd.output().await.expect("st runs");
    let _ = std::fs::remove_dir_all(&report);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The summary always (everything with NOVA_FUZZ_VERBOSE); the failures when there are any.
    let summary = match stdout.find("= SUMMARY =") {
        Some(i) if std::env::var_os("NOVA_FUZZ_VERBOSE").is_none() => {
            // From the start of the banner's line.
            &stdout[stdout[..i].rfind('\n').map_or(0, |n| n + 1)..]
        }
        _ => stdout.as_ref(),
    };
    println!(
        "Schemathesis on {engine:?} ({examples} examples per operation, seed {seed}, {:.0?}):\n{summary}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "Schemathesis found problems on {engine:?} (reproduce with NOVA_FUZZ_SEED={seed}):\n{stdout}\n{stderr}"
    );
    app.stop().await;
}

/// The `st` executable, or `None` (skip) when it is missing outside CI.
fn schemathesis() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("st"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "Schemathesis (`st`) is missing under CI: pip install schemathesis (see .ci/run)"
        );
        eprintln!(
            "\n*** SKIPPING tests/fuzz_openapi.rs: Schemathesis (`st`) is not installed. ***\n\
             *** pip install schemathesis to run the OpenAPI fuzzing (CI requires it). ***\n"
        );
    }
    found
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the fuzzer works on: its callers, and resources of another user that its operations
/// reach by id (so that requests get past "not found" to the rules and answers behind it).
struct World {
    user_token: String,
    admin_token: String,
    deactivate_token: String,
    logout_token: String,
    password_token: String,
    author: Uuid,
    post: Uuid,
    comment: Uuid,
    conversation: Uuid,
    message: Uuid,
    stream: Uuid,
    experiment: String,
}

impl World {
    async fn new(app: &TestApp) -> World {
        let (user, user_token, _) = app.user("fuzz_user").await;
        let (_, admin_token, _) = app.user("fuzz_admin").await;
        let (_, deactivate_token, _) = app.user("fuzz_deactivate").await;
        let (_, logout_token, _) = app.user("fuzz_logout").await;
        let (_, password_token, _) = app.user("fuzz_password").await;
        let (author, author_token, _) = app.user("fuzz_author").await;
        app.user_commands()
            .grant_role(
                &nova_commands::CommandContext::new(None, None),
                "fuzz_admin",
                Role::Admin,
            )
            .await
            .unwrap();
        let post = |path: &str, token: &str, body: Value| {
            let req = app.post(path).bearer_auth(token).json(&body);
            async move {
                let res = req.send().await.unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                res.json::<Value>().await.unwrap()
            }
        };
        let id = |v: &Value, field: &str| -> Uuid { v[field].as_str().unwrap().parse().unwrap() };

        let p = post("/v1/posts", &author_token, json!({"content": "fuzz me"})).await;
        let post_id = id(&p, "post_id");
        let c = post(
            &format!("/v1/posts/{post_id}/comments"),
            &author_token,
            json!({"content": "a comment"}),
        )
        .await;
        // The conversation's members must be in the directory (its existence check).
        caught_up(app, nova_projections::user_directory::NAME, Domain::User).await;
        let conv = post(
            "/v1/conversations",
            &author_token,
            json!({"kind": "group", "member_ids": [user], "name": "fuzz"}),
        )
        .await;
        let conversation = id(&conv, "conversation_id");
        let m = post(
            &format!("/v1/conversations/{conversation}/messages"),
            &author_token,
            json!({"ciphertext": "AwgA", "sender_device_id": "DEV", "session_id": "s",
                   "client_message_id": "c1"}),
        )
        .await;
        let s = post("/v1/streams", &author_token, json!({"title": "fuzz"})).await;
        let stream = id(&s, "stream_id");
        let res = app
            .post(&format!("/v1/streams/{stream}/start"))
            .bearer_auth(&author_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        post(
            "/v1/experiments",
            &admin_token,
            json!({"key": "fuzz", "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}),
        )
        .await;
        post("/v1/experiments/fuzz/start", &admin_token, json!({})).await;
        World {
            user_token,
            admin_token,
            deactivate_token,
            logout_token,
            password_token,
            author,
            post: post_id,
            comment: id(&c, "comment_id"),
            conversation,
            message: id(&m, "message_id"),
            stream,
            experiment: "fuzz".to_owned(),
        }
    }
}

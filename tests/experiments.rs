//! Experiments end to end over HTTP, on both engines: definitions and their authorization,
//! GrowthBook-compatible sticky assignment, exposure and conversion counting, results against
//! reference values, the deactivation policy, and rebuild of the results view.
//!
//! Reference values (Python 3, SciPy 1.x):
//!
//! ```python
//! import math
//! from scipy.stats import norm, chisquare
//! def compare(nc, cc, nt, ct):
//!     pc, pt = cc/nc, ct/nt
//!     p = (cc+ct)/(nc+nt)
//!     se = math.sqrt(p*(1-p)*(1/nc+1/nt))
//!     pval = 2*norm.sf(abs((pt-pc)/se))                      # pooled two-proportion z-test
//!     up = pt/pc - 1
//!     se_rel = math.sqrt((pt*(1-pt)/nt)/pc**2 + pt**2*(pc*(1-pc)/nc)/pc**4)   # delta method
//!     z = norm.ppf(0.975)
//!     return up, up - z*se_rel, up + z*se_rel, pval
//! compare(6, 2, 5, 4)   # (1.4, -1.512377220776, 4.312377220776, 0.121680515286)
//! chisquare([6, 5], [5.5, 5.5]).pvalue   # 0.763024600553
//! ```

mod common;

use chrono::Utc;
use common::*;
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::Engine;
use nova_infra::store::{AppendRequest, NewEvent, StreamAppend};
use nova_projections::experiment_results::ExperimentResults;
use nova_projections::{Checkpoints, Projection};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    definitions_are_admin_only_and_validated,
    assignment_is_growthbook_compatible_and_sticky,
    conversions_and_results_match_reference_values,
    deactivated_users_stop_counting,
);

async fn admin(app: &TestApp, name: &str) -> (Uuid, String) {
    let (id, token, _) = app.user(name).await;
    app.user_commands()
        .grant_role(
            &nova_commands::CommandContext::new(None, None),
            name,
            nova_event_schemas::user::Role::Admin,
        )
        .await
        .unwrap();
    (id, token)
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let req = match method {
        "POST" => app.post(path),
        "PATCH" => app.patch(path),
        _ => app.get(path),
    };
    let req = req.bearer_auth(token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    req.send().await.unwrap()
}

async fn ok(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let res = send(app, method, path, token, body).await;
    assert!(
        res.status().is_success(),
        "{method} {path}: {}",
        res.status()
    );
    res.json().await.unwrap()
}

async fn create(app: &TestApp, token: &str, body: Value) {
    let res = send(app, "POST", "/v1/experiments", token, Some(body)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

async fn definitions_are_admin_only_and_validated(engine: Engine) {
    let app = spawn(engine).await;
    let (_, root) = admin(&app, "exp_admin").await;
    let (_, plain, _) = app.user("exp_plain").await;
    let good = json!({"key": "checkout", "variants": [
        {"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}]});

    let res = app
        .post("/v1/experiments")
        .json(&good)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = send(&app, "POST", "/v1/experiments", &plain, Some(good.clone())).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    let v = |a: f64, b: f64| json!([{"name": "a", "weight": a}, {"name": "b", "weight": b}]);
    for (bad, field) in [
        (json!({"key": "x1", "variants": v(60.0, 60.0)}), "variants"),
        (
            json!({"key": "x2", "variants": v(-10.0, 110.0)}),
            "variants",
        ),
        (
            json!({"key": "x3", "variants": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]}),
            "variants",
        ),
        (json!({"key": "x4", "variants": []}), "variants"),
        (
            json!({"key": "x5", "variants": [{"name": "", "weight": 50}, {"name": "b", "weight": 50}]}),
            "variants",
        ),
        (json!({"key": "Bad Key", "variants": v(50.0, 50.0)}), "key"),
        (json!({"key": "", "variants": v(50.0, 50.0)}), "key"),
        (
            json!({"key": "x6", "variants": v(50.0, 50.0), "coverage": 1.5}),
            "coverage",
        ),
        (
            json!({"key": "x7", "variants": v(50.0, 50.0), "seed": ""}),
            "seed",
        ),
    ] {
        let res = send(&app, "POST", "/v1/experiments", &root, Some(bad.clone())).await;
        let err = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(err["details"]["field"], field, "{bad}");
    }

    let res = send(&app, "POST", "/v1/experiments", &root, Some(good.clone())).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(position(&res).starts_with("experiment:"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["key"], "checkout");
    let res = send(&app, "POST", "/v1/experiments", &root, Some(good)).await;
    expect_error(res, StatusCode::CONFLICT, "already_exists").await;

    // Admin only: start, stop, patch.
    for (method, path, body) in [
        ("POST", "/v1/experiments/checkout/start", None),
        ("POST", "/v1/experiments/checkout/stop", None),
        (
            "PATCH",
            "/v1/experiments/checkout",
            Some(json!({"coverage": 0.5})),
        ),
    ] {
        let res = send(&app, method, path, &plain, body).await;
        expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let res = send(&app, "POST", "/v1/experiments/nope/start", &root, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = send(&app, "POST", "/v1/experiments/checkout/stop", &root, None).await;
    expect_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "experiment_not_started",
    )
    .await;
    let res = send(
        &app,
        "PATCH",
        "/v1/experiments/checkout",
        &root,
        Some(json!({"variants": v(50.0, 40.0)})),
    )
    .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;

    let started = ok(&app, "POST", "/v1/experiments/checkout/start", &root, None).await;
    assert_eq!(started["version"], 2);
    // Starting a running experiment changes nothing.
    let again = ok(&app, "POST", "/v1/experiments/checkout/start", &root, None).await;
    assert_eq!(again["version"], 2);
    let res = send(&app, "PATCH", "/v1/experiments/checkout", &root,
        Some(json!({"variants": [{"name": "control", "weight": 50}, {"name": "other", "weight": 50}]}))).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "variants_changed").await;
    let patched = ok(&app, "PATCH", "/v1/experiments/checkout", &root,
        Some(json!({"variants": [{"name": "control", "weight": 30}, {"name": "treatment", "weight": 70}], "coverage": 0.8}))).await;
    assert_eq!(patched["version"], 3);
    ok(&app, "POST", "/v1/experiments/checkout/stop", &root, None).await;
    let res = send(&app, "POST", "/v1/experiments/checkout/start", &root, None).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "experiment_stopped").await;
    let res = send(
        &app,
        "PATCH",
        "/v1/experiments/checkout",
        &root,
        Some(json!({"coverage": 1.0})),
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "experiment_stopped").await;
    // Stopped: nobody is in it, conversions are refused.
    let a = ok(
        &app,
        "GET",
        "/v1/experiments/checkout/assignment",
        &plain,
        None,
    )
    .await;
    assert_eq!(a, json!({"variant": "control", "in_experiment": false}));
    let res = send(
        &app,
        "POST",
        "/v1/experiments/checkout/conversions",
        &plain,
        Some(json!({"metric": "buy"})),
    )
    .await;
    expect_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "experiment_not_running",
    )
    .await;
    let res = send(&app, "GET", "/v1/experiments/nope/assignment", &plain, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = send(&app, "GET", "/v1/experiments/nope/results", &plain, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    app.stop().await;
}

/// The variant is the one GrowthBook's SDK computes for the user id (hashing v2, seed, weights
/// as fractions, coverage), and it sticks when the weights change.
async fn assignment_is_growthbook_compatible_and_sticky(engine: Engine) {
    let app = spawn(engine).await;
    let (_, root) = admin(&app, "exp_admin").await;
    create(&app, &root, json!({"key": "pricing", "seed": "pricing-seed", "coverage": 0.9,
        "variants": [{"name": "a", "weight": 20}, {"name": "b", "weight": 30}, {"name": "c", "weight": 50}]})).await;
    ok(&app, "POST", "/v1/experiments/pricing/start", &root, None).await;
    let ranges = nova_aggregates::experiment::assign::bucket_ranges(3, 0.9, Some(&[0.2, 0.3, 0.5]));
    for i in 0..6 {
        let (id, token, _) = app.user(&format!("exp_user_{i}")).await;
        let n =
            nova_aggregates::experiment::assign::hash("pricing-seed", &id.to_string(), 2).unwrap();
        let expected = nova_aggregates::experiment::assign::choose_variation(n, &ranges);
        let res = send(
            &app,
            "GET",
            "/v1/experiments/pricing/assignment",
            &token,
            None,
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let exposed = res.headers().get("x-nova-position").is_some();
        let body: Value = res.json().await.unwrap();
        match expected {
            Some(i) => {
                assert_eq!(body["variant"], ["a", "b", "c"][i]);
                assert_eq!(body["in_experiment"], true);
                assert!(exposed, "the first read is the exposure");
            }
            None => {
                assert_eq!(body, json!({"variant": "a", "in_experiment": false}));
                assert!(!exposed);
            }
        }
        // A second read is the same answer and records nothing.
        let res = send(
            &app,
            "GET",
            "/v1/experiments/pricing/assignment",
            &token,
            None,
        )
        .await;
        assert!(res.headers().get("x-nova-position").is_none());
        assert_eq!(res.json::<Value>().await.unwrap(), body);
    }

    // Stickiness: everyone exposed to "a" keeps it when "a" loses all its weight.
    create(
        &app,
        &root,
        json!({"key": "sticky", "variants": [
        {"name": "control", "weight": 100}, {"name": "treatment", "weight": 0}]}),
    )
    .await;
    ok(&app, "POST", "/v1/experiments/sticky/start", &root, None).await;
    let (_, early, _) = app.user("exp_early").await;
    let a = ok(
        &app,
        "GET",
        "/v1/experiments/sticky/assignment",
        &early,
        None,
    )
    .await;
    assert_eq!(a, json!({"variant": "control", "in_experiment": true}));
    ok(
        &app,
        "PATCH",
        "/v1/experiments/sticky",
        &root,
        Some(json!({"variants": [
        {"name": "control", "weight": 0}, {"name": "treatment", "weight": 100}]})),
    )
    .await;
    let a = ok(
        &app,
        "GET",
        "/v1/experiments/sticky/assignment",
        &early,
        None,
    )
    .await;
    assert_eq!(a, json!({"variant": "control", "in_experiment": true}));
    let (_, late, _) = app.user("exp_late").await;
    let a = ok(
        &app,
        "GET",
        "/v1/experiments/sticky/assignment",
        &late,
        None,
    )
    .await;
    assert_eq!(a, json!({"variant": "treatment", "in_experiment": true}));
    app.stop().await;
}

/// Appends, below the command API, a second exposure of `user` to `variant`: what a bug
/// elsewhere (or an import) could store. The view must exclude the user.
async fn expose_again(app: &TestApp, key: &str, user: Uuid, variant: &str) {
    let id = nova_event_schemas::experiment::participant_id(key, user);
    let version = app
        .db
        .store
        .load(Domain::Experiment, id, 0)
        .await
        .unwrap()
        .last()
        .unwrap()
        .version;
    app.db
        .store
        .backend()
        .append_batch(
            Domain::Experiment,
            &[AppendRequest {
                streams: vec![StreamAppend {
                    aggregate_id: id,
                    aggregate_type: "participant".into(),
                    expected_version: version,
                    events: vec![NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: "exposed".into(),
                        schema_version: 1,
                        payload: json!({"experiment_key": key, "user_id": user,
                            "variant": variant, "exposed_at": Utc::now()}),
                    }],
                }],
                metadata: EventMetadata::default(),
                recorded_at: Utc::now(),
                command_key: None,
            }],
        )
        .await
        .unwrap();
}

fn close(v: &Value, expected: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - expected).abs() < 1e-6, "{got} != {expected}");
}

async fn results_tables(app: &TestApp, suffix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (table, cols) in [
        ("experiment_results", "experiment_key || '|' || variants || '|' || status || '|' || CAST(multiple_exposures AS TEXT)"),
        ("experiment_variant_users", "experiment_key || '|' || variant || '|' || CAST(users AS TEXT)"),
        ("experiment_metric_conversions", "experiment_key || '|' || variant || '|' || metric || '|' || CAST(conversions AS TEXT)"),
        ("experiment_participants", "experiment_key || '|' || user_id || '|' || variant || '|' || CAST(excluded AS TEXT)"),
        ("experiment_conversions", "experiment_key || '|' || user_id || '|' || metric"),
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT {cols} FROM {table}{suffix} ORDER BY 1"))
            .fetch_all(&app.db.any)
            .await
            .unwrap();
        out.push(rows.into_iter().map(|r| r.0).collect());
    }
    out
}

/// 7 users exposed to the control (2 convert, plus one who converts and is then exposed to
/// the treatment as well: excluded), 5 to the treatment (4 convert); final weights 50/50.
async fn conversions_and_results_match_reference_values(engine: Engine) {
    let app = spawn(engine).await;
    let (_, root) = admin(&app, "exp_admin").await;
    create(
        &app,
        &root,
        json!({"key": "signup-flow", "variants": [
        {"name": "control", "weight": 100}, {"name": "treatment", "weight": 0}]}),
    )
    .await;
    ok(
        &app,
        "POST",
        "/v1/experiments/signup-flow/start",
        &root,
        None,
    )
    .await;
    let assign = "/v1/experiments/signup-flow/assignment";
    let convert = "/v1/experiments/signup-flow/conversions";
    let buy = || Some(json!({"metric": "buy"}));

    // A user who converts before any exposure is not counted.
    let (_, outsider, _) = app.user("exp_outsider").await;
    assert_eq!(
        ok(&app, "POST", convert, &outsider, buy()).await["counted"],
        false
    );

    let mut control = Vec::new();
    for i in 0..7 {
        let (id, token, _) = app.user(&format!("exp_c{i}")).await;
        assert_eq!(
            ok(&app, "GET", assign, &token, None).await["variant"],
            "control"
        );
        control.push((id, token));
    }
    for (_, token) in control.iter().take(2) {
        assert_eq!(
            ok(&app, "POST", convert, token, buy()).await["counted"],
            true
        );
        // Once per user and metric.
        assert_eq!(
            ok(&app, "POST", convert, token, buy()).await["counted"],
            false
        );
    }
    assert_eq!(
        ok(&app, "POST", convert, &control[6].1, buy()).await["counted"],
        true
    );
    ok(
        &app,
        "PATCH",
        "/v1/experiments/signup-flow",
        &root,
        Some(json!({"variants": [
        {"name": "control", "weight": 0}, {"name": "treatment", "weight": 100}]})),
    )
    .await;
    for i in 0..5 {
        let (_, token, _) = app.user(&format!("exp_t{i}")).await;
        assert_eq!(
            ok(&app, "GET", assign, &token, None).await["variant"],
            "treatment"
        );
        if i < 4 {
            assert_eq!(
                ok(&app, "POST", convert, &token, buy()).await["counted"],
                true
            );
        }
    }
    let res = send(
        &app,
        "POST",
        convert,
        &control[0].1,
        Some(json!({"metric": "Not A Metric"})),
    )
    .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    expose_again(&app, "signup-flow", control[6].0, "treatment").await;
    ok(
        &app,
        "PATCH",
        "/v1/experiments/signup-flow",
        &root,
        Some(json!({"variants": [
        {"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}]})),
    )
    .await;

    let head = app.db.store.head(Domain::Experiment).await.unwrap();
    let res = app
        .get("/v1/experiments/signup-flow/results")
        .bearer_auth(&root)
        .header("X-Nova-Min-Position", format!("experiment:{head}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["multiple_exposures"], 1);
    assert_eq!(r["variants"][0]["name"], "control");
    assert_eq!(r["variants"][0]["users"], 6);
    assert_eq!(r["variants"][1]["users"], 5);
    let (c, t) = (
        &r["variants"][0]["metrics"]["buy"],
        &r["variants"][1]["metrics"]["buy"],
    );
    assert_eq!(c["conversions"], 2);
    assert_eq!(t["conversions"], 4);
    close(&c["rate"], 2.0 / 6.0);
    close(&t["rate"], 0.8);
    assert!(c["uplift"].is_null() && c["p_value"].is_null());
    close(&t["uplift"], 1.4);
    close(&t["ci_low"], -1.512377220776);
    close(&t["ci_high"], 4.312377220776);
    close(&t["p_value"], 0.121680515286);
    close(&r["srm_p_value"], 0.763024600553);
    assert_eq!(r["srm_flag"], false);

    // Rebuild: a from-scratch replay into a copy equals the live view.
    caught_up(&app, "experiment_results", Domain::Experiment).await;
    let live = results_tables(&app, "").await;
    let copy = ExperimentResults::default().shadow("_replay").unwrap();
    nova_projections::schema::create_copies(
        &app.db.any,
        &ExperimentResults::default().tables(),
        "_replay",
    )
    .await
    .unwrap();
    nova_projections::catch_up(&*copy, &app.db.store, &app.db.any, &Checkpoints::default())
        .await
        .unwrap();
    assert_eq!(results_tables(&app, "_replay").await, live);
    assert!(!live[3].is_empty());
    app.stop().await;
}

/// After `user.deactivated`, the experiment policy withdraws the user's participant streams:
/// a later conversion (here issued straight to the command service, as a client whose token
/// outlived the deactivation would) is not counted.
async fn deactivated_users_stop_counting(engine: Engine) {
    let app = spawn(engine).await;
    let (_, root) = admin(&app, "exp_admin").await;
    create(
        &app,
        &root,
        json!({"key": "onboarding", "variants": [
        {"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}]}),
    )
    .await;
    ok(
        &app,
        "POST",
        "/v1/experiments/onboarding/start",
        &root,
        None,
    )
    .await;
    let (id, token, _) = app.user("exp_leaver").await;
    let variant = ok(
        &app,
        "GET",
        "/v1/experiments/onboarding/assignment",
        &token,
        None,
    )
    .await;
    assert_eq!(variant["in_experiment"], true);
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    caught_up(&app, nova_policies::experiment::NAME, Domain::User).await;

    let experiments = nova_commands::experiment::ExperimentCommands::new(app.command_store());
    let ctx = nova_commands::CommandContext::new(None, None);
    let (counted, _) = experiments
        .convert(&ctx, "onboarding", id, "buy")
        .await
        .unwrap();
    assert!(!counted);
    let events = app
        .db
        .store
        .load(
            Domain::Experiment,
            nova_event_schemas::experiment::participant_id("onboarding", id),
            0,
        )
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["exposed", "withdrawn"]);
    app.stop().await;
}

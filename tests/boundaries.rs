//! The real `nova boundaries` binary: no database needed, exit code 0 on today's code, and a
//! stable JSON document.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nova");

fn boundaries(json: bool) -> std::process::Output {
    let dir = std::env::temp_dir();
    let mut cmd = Command::new(BIN);
    cmd.arg("boundaries")
        .current_dir(&dir)
        // Points at nothing that exists: the command must not touch a database.
        .env("NOVA_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env_remove("NOVA_NATS_URL");
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("nova runs")
}

#[test]
fn boundaries_json_reports_the_ownership_matrix_and_no_violation() {
    let out = boundaries(true);
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["violations"], Value::Array(Vec::new()));

    let domains = doc["domains"].as_array().expect("domains");
    assert_eq!(domains.len(), 6);
    assert_eq!(domains[0]["domain"], "user");
    assert_eq!(domains[0]["events_table"], "user_events");
    assert!(domains[0]["aggregate_types"]
        .as_array()
        .expect("aggregate_types")
        .contains(&Value::from("user")));
    let registered = domains[0]["event_types"]
        .as_array()
        .expect("event_types")
        .iter()
        .find(|e| e["event_type"] == "registered")
        .expect("user.registered listed")
        .clone();
    assert_eq!(registered["schema_file"], "user/registered.v3.json");
    assert!(registered["schema_version"].is_i64());

    let directory = doc["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "user_directory")
        .expect("user_directory listed")
        .clone();
    assert_eq!(
        directory["written_by"],
        serde_json::json!([{"kind": "projection", "name": "user_directory"}])
    );
    assert_eq!(directory["reads"], serde_json::json!(["user"]));
    assert!(directory["migrations"].is_array());
    assert!(directory["references"].is_array());

    let policies = doc["policies"].as_array().expect("policies");
    assert!(policies
        .iter()
        .any(|p| p["policy"] == "policy_follow_on_user_deactivated"
            && p["domain"] == "follow"
            && p["consumes"] == serde_json::json!(["user.deactivated"])
            && p["issues"] == serde_json::json!(["follow.remove_user"])));

    let routes = doc["routes"].as_array().expect("routes");
    assert!(!routes.is_empty());
    for r in routes {
        assert!(r["method"].is_string() && r["path"].is_string(), "{r}");
        assert!(r["owner"]["kind"].is_string(), "route without owner: {r}");
    }
}

#[test]
fn boundaries_prints_a_section_per_kind() {
    let out = boundaries(false);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for section in [
        "Domains",
        "Tables",
        "Policies",
        "Routes",
        "Violations: none",
    ] {
        assert!(text.contains(section), "missing {section}:\n{text}");
    }
}

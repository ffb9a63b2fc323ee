//! Following one request through the logs of the real binary: with `NOVA_LOG_FORMAT=json` and
//! `NOVA_LOG=info,nova=debug`, the request id a client sends in `X-Request-Id` shows on the
//! HTTP span, on the command span, on the append span of the batch that wrote its events, and
//! on the line of the `user_directory` projector that applied them (at the position the
//! response's `X-Nova-Position` named).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nova_infra::db::Engine;
use nova_infra::on_both_backends;
use nova_infra::testing::TestDb;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_nova");

/// The server process, killed if the test fails before it is stopped.
struct Server {
    child: Child,
    lines: Receiver<Value>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nova serve` on `db` with JSON logs; returns it and its address.
fn serve(db: &TestDb) -> (Server, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("NOVA_DATABASE_URL", &db.url)
        .env(
            "NOVA_JWT_SECRET",
            "trace-test-secret-trace-test-secret-0123",
        )
        .env("NOVA_LISTEN", "127.0.0.1:0")
        .env("NOVA_LOG_FORMAT", "json")
        .env("NOVA_LOG", "info,nova=debug")
        .env("NOVA_ARGON2_MEMORY_KIB", "1024")
        .env("NOVA_ARGON2_ITERATIONS", "1")
        .env_remove("NOVA_DATA_DIR")
        .env_remove("NOVA_NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nova starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    let mut server = Server { child, lines };
    let addr = wait_for(&mut server, &mut Vec::new(), |seen| {
        seen.iter()
            .find_map(|v| v["fields"]["addr"].as_str().map(str::to_owned))
    });
    (server, addr)
}

/// Reads log lines into `seen` until `found` finds what it looks for in them (60 s at most).
fn wait_for<T>(
    server: &mut Server,
    seen: &mut Vec<Value>,
    found: impl Fn(&[Value]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = found(seen) {
            return t;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match server.lines.recv_timeout(left) {
            Ok(v) => seen.push(v),
            Err(RecvTimeoutError::Timeout) => panic!(
                "not in the logs within 60 s; lines seen:\n{}",
                seen.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Err(RecvTimeoutError::Disconnected) => panic!("nova exited"),
        }
    }
}

/// The span called `name` in a line's span list (outermost first), if the line has one.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

async fn a_request_id_is_followed_from_the_edge_to_the_projection(engine: Engine) {
    let db = TestDb::new(engine).await;
    let (mut server, addr) = serve(&db);
    let rid = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/v1/users"))
        .header("X-Request-Id", &rid)
        .json(&json!({"username": "tracy", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-request-id"], rid.as_str());
    // `<domain>:<position>`
    let header = res.headers()["x-nova-position"].to_str().unwrap();
    let (domain, position) = header.split_once(':').unwrap();
    assert_eq!(domain, "user");
    let position: i64 = position.parse().unwrap();
    let user_id = res.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut seen = Vec::new();
    // The projector applied the request's events: a `user_directory` line with its request id
    // and the position the response named.
    let applied = wait_for(&mut server, &mut seen, |seen| {
        seen.iter()
            .find(|l| {
                span(l, "project").is_some_and(|s| s["projection"] == "user_directory")
                    && l["fields"]["request_id"] == rid.as_str()
                    && l["fields"]["position"] == position
            })
            .cloned()
    });
    let project = span(&applied, "project").unwrap();
    assert_eq!(project["domain"], "user");
    assert!(project["from"].as_i64().unwrap() <= position);
    assert!(project["to"].as_i64().unwrap() >= position);
    assert!(project["events"].as_u64().unwrap() >= 1);
    assert_eq!(applied["fields"]["event_type"], "registered");
    assert!(applied["fields"]["correlation_id"].is_string());

    // The command ran in the request's HTTP span, in a command span naming the domain, the
    // aggregate and the command, with the request id.
    let command_line = wait_for(&mut server, &mut seen, |seen| {
        seen.iter()
            .find(|l| {
                span(l, "command").is_some_and(|s| s["aggregate_id"] == user_id.as_str())
                    && l["fields"]["message"] == "command appended"
            })
            .cloned()
    });
    let http = span(&command_line, "http").expect("the command runs in the HTTP span");
    assert_eq!(http["request_id"], rid.as_str());
    assert_eq!(http["method"], "POST");
    assert_eq!(http["route"], "/v1/users");
    let command = span(&command_line, "command").unwrap();
    assert_eq!(command["domain"], "user");
    assert_eq!(command["aggregate_type"], "user");
    assert_eq!(command["command"], "register");
    assert_eq!(command["request_id"], rid.as_str());
    assert_eq!(command_line["fields"]["position"], position);

    // The batch that wrote it: its append span lists the request id and the positions.
    let batch = wait_for(&mut server, &mut seen, |seen| {
        seen.iter()
            .filter_map(|l| span(l, "append"))
            .find(|s| {
                s["request_ids"]
                    .as_str()
                    .is_some_and(|ids| ids.split(',').any(|id| id == rid))
            })
            .cloned()
    });
    assert_eq!(batch["domain"], "user");
    assert!(batch["batch_size"].as_u64().unwrap() >= 1);
    // Two streams: the username claim and the user.
    assert!(batch["streams"].as_u64().unwrap() >= 2);
    assert!(batch["first_position"].as_i64().unwrap() < position);
    assert!(batch["last_position"].as_i64().unwrap() >= position);

    // The response closed the HTTP span with its route and status.
    let response = wait_for(&mut server, &mut seen, |seen| {
        seen.iter()
            .find(|l| {
                span(l, "http").is_some_and(|s| s["request_id"] == rid.as_str())
                    && l["fields"]["message"] == "response"
            })
            .cloned()
    });
    assert_eq!(span(&response, "http").unwrap()["status"], 201);

    // A command through the repository (a login) has the same span, named after the command.
    let login_rid = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/v1/sessions"))
        .header("X-Request-Id", &login_rid)
        .json(&json!({"username": "tracy", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let login = wait_for(&mut server, &mut seen, |seen| {
        seen.iter()
            .filter(|l| l["fields"]["message"] == "command appended")
            .filter_map(|l| span(l, "command"))
            .find(|s| s["request_id"] == login_rid.as_str())
            .cloned()
    });
    assert_eq!(login["domain"], "user");
    assert_eq!(login["aggregate_type"], "user");
    assert_eq!(login["aggregate_id"], user_id.as_str());
    assert_eq!(login["command"], "login");

    // Nothing of the commands' payloads reaches the logs.
    for line in &seen {
        let text = line.to_string();
        assert!(!text.contains("correct horse"), "{text}");
        assert!(!text.contains("$argon2"), "{text}");
    }
    drop(server);
}

on_both_backends!(a_request_id_is_followed_from_the_edge_to_the_projection);

//! The real `nova` binary: the README's serve command on the embedded default, graceful
//! shutdown on SIGTERM, and refusing to start without a JWT secret on PostgreSQL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_nova");

struct Server {
    child: Child,
    addr: String,
}

/// Starts `nova serve` in `cwd` with no database configuration and waits for its address.
fn serve(cwd: &Path) -> Server {
    serve_with(cwd, &[])
}

/// [`serve`] with extra arguments (e.g. `--api-only`).
fn serve_with(cwd: &Path, args: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .env("NOVA_LISTEN", "127.0.0.1:0")
        // Load from one address: the rate limits (ADR 0022) are not under test here.
        .env("NOVA_RATE_LIMIT_PER_MINUTE", "0")
        .env("NOVA_RATE_LIMIT_ANONYMOUS_PER_MINUTE", "0")
        .env("NOVA_LOG_FORMAT", "json")
        .env("NOVA_ARGON2_MEMORY_KIB", "1024")
        .env("NOVA_ARGON2_ITERATIONS", "1")
        .env_remove("NOVA_DATABASE_URL")
        .env_remove("NOVA_DATA_DIR")
        .env_remove("NOVA_JWT_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nova starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(addr) = v["fields"]["addr"].as_str() {
                    let _ = tx.send(addr.to_owned());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("nova reports its address");
    Server { child, addr }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nova-bin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn readme_walkthrough_on_the_embedded_default() {
    let dir = temp_dir();
    let mut server = serve(&dir);
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "alice", "password": "correct horse", "display_name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let tokens: Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"username": "alice", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let me: Value = http
        .get(format!("{base}/v1/users/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["display_name"], "Alice");

    // Embedded default: one SQLite file and a generated, owner-only secret in ./nova-data.
    assert!(dir.join("nova-data/nova.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("nova-data/jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Restart: data and the secret survive, so the token is still valid.
    sigterm(&server.child);
    assert!(server.child.wait().unwrap().success());
    let mut server = serve(&dir);
    let res = http
        .get(format!("http://{}/v1/users/me", server.addr))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    sigterm(&server.child);
    assert!(server.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let dir = temp_dir();
    // API only: no projector runs, so a written position is never applied.
    let mut server = serve_with(&dir, &["--api-only"]);
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "inflight", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let position = res.headers()["x-nova-position"]
        .to_str()
        .unwrap()
        .to_owned();
    let id = res.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A read that waits (up to 5 s) for that position: in flight for a while.
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/v1/users/{id}");
        async move {
            http.get(url)
                .header("X-Nova-Min-Position", position)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&server.child);
    let res = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "projection_lagging");
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // New connections are refused after shutdown.
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_without_jwt_secret_refuses_to_start() {
    let out = Command::new(BIN)
        .args(["serve"])
        .env(
            "NOVA_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        )
        .env_remove("NOVA_JWT_SECRET")
        .env("NOVA_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOVA_JWT_SECRET is required"), "{stderr}");
}

#[test]
fn migrate_reports_in_json() {
    let dir = temp_dir();
    let out = Command::new(BIN)
        .args(["migrate", "--json"])
        .current_dir(&dir)
        .env_remove("NOVA_DATABASE_URL")
        .env_remove("NOVA_DATA_DIR")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["migrated"], true);
    let _ = std::fs::remove_dir_all(dir);
}

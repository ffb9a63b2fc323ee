//! Reads the resolved versions of the peer libraries from this crate's Cargo.lock, so the
//! JSON report names exactly the versions that were compiled in.

use std::path::PathBuf;

const CRATES: [(&str, &str); 3] = [
    ("esrs", "PEER_ESRS_VERSION"),
    ("cqrs-es", "PEER_CQRS_ES_VERSION"),
    ("postgres-es", "PEER_POSTGRES_ES_VERSION"),
];

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    let lock_path = dir.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    for (name, var) in CRATES {
        let version = locked_version(&lock, name).unwrap_or_else(|| "unknown".to_string());
        println!("cargo:rustc-env={var}={version}");
    }
}

/// The `version` of the `[[package]]` entry named `name` (the first one, if several).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let next = lines.next()?.trim();
            let version = next.strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}

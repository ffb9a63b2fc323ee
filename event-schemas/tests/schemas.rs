//! The checked-in JSON Schemas are the contract with consumers outside this codebase; this
//! test fails when a Rust payload type drifts from its file. To accept an intended change
//! (which must be a new schema version), run with `NOVA_BLESS_SCHEMAS=1` to rewrite the files.

use std::path::PathBuf;

use nova_event_schemas::{follow::FollowEvent, post::PostEvent, user::UserEvent, DomainEvent};

fn check<E: DomainEvent>() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(E::DOMAIN.as_str());
    let bless = std::env::var_os("NOVA_BLESS_SCHEMAS").is_some();
    let schemas = E::current_schemas();
    assert_eq!(schemas.len(), E::TYPES.len());
    for (file, schema) in schemas {
        let path = dir.join(&file);
        let rendered = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing schema file {}", path.display()));
        let on_disk: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
        assert_eq!(
            on_disk,
            schema,
            "{} disagrees with the Rust type; bump the version and add an upcaster",
            path.display()
        );
    }
    // No stray files: every file on disk belongs to a known (type, version).
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let known = E::TYPES
            .iter()
            .any(|(t, _)| name.starts_with(&format!("{t}.v")) && name.ends_with(".json"));
        assert!(known, "schema file {name} belongs to no event type");
    }
}

#[test]
fn schemas_match_checked_in_files() {
    check::<UserEvent>();
    check::<FollowEvent>();
    check::<PostEvent>();
}

#[test]
fn payload_roundtrips_through_storage_form() {
    use chrono::Utc;
    use nova_event_schemas::user::*;
    let ev = UserEvent::Registered(Registered {
        user_id: uuid::Uuid::now_v7(),
        username: "alice".into(),
        display_name: None,
        password_hash: "$argon2id$x".into(),
        registered_at: Utc::now(),
    });
    let back =
        UserEvent::from_stored(ev.event_type(), ev.schema_version(), ev.to_payload()).unwrap();
    assert_eq!(ev, back);
    let err = UserEvent::from_stored("registered", 9, ev.to_payload()).unwrap_err();
    assert!(err.to_string().contains("v9"));
    let err = UserEvent::from_stored("nope", 1, serde_json::json!({})).unwrap_err();
    assert!(err.to_string().contains("unknown event type"));
}

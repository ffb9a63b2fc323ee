//! The checked-in JSON Schemas are the contract with consumers outside this codebase; this
//! test fails when a Rust payload type drifts from its file. To accept an intended change
//! (which must be a new schema version), run with `NOVA_BLESS_SCHEMAS=1` to rewrite the files.
//! Superseded versions (the upcasters' inputs) are checked too: their files never change.

use std::path::PathBuf;

use nova_event_schemas::conversation::ConversationEvent;
use nova_event_schemas::experiment::ExperimentEvent;
use nova_event_schemas::stream::StreamEvent;
use nova_event_schemas::{follow::FollowEvent, post::PostEvent, user::UserEvent, DomainEvent};

fn check<E: DomainEvent>() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(E::DOMAIN.as_str());
    let bless = std::env::var_os("NOVA_BLESS_SCHEMAS").is_some();
    let current = E::current_schemas();
    assert_eq!(current.len(), E::TYPES.len());
    let superseded = E::superseded_schemas();
    let files: Vec<String> = current
        .iter()
        .chain(&superseded)
        .map(|(f, _)| f.clone())
        .collect();
    for (file, schema) in current.into_iter().chain(superseded) {
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
        assert!(
            files.contains(&name),
            "schema file {name} belongs to no current or superseded event version"
        );
    }
}

#[test]
fn schemas_match_checked_in_files() {
    check::<UserEvent>();
    check::<FollowEvent>();
    check::<PostEvent>();
    check::<ExperimentEvent>();
    check::<StreamEvent>();
    check::<ConversationEvent>();
}

#[test]
fn payload_roundtrips_through_storage_form() {
    use chrono::Utc;
    use nova_event_schemas::user::*;
    let ev = UserEvent::Registered(Registered {
        user_id: uuid::Uuid::now_v7(),
        username: "alice".into(),
        display_name: None,
        credential_id: uuid::Uuid::now_v7(),
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

#[test]
fn notification_preferences_v1_and_v2_are_upcast_to_v3() {
    use nova_event_schemas::user::*;
    let changed_at = "2026-11-30T05:00:00Z";
    // v1 knew five kinds, v2 six; both come up to v3 unchanged in meaning.
    let v1 = serde_json::json!({ "disabled": ["like", "share"], "changed_at": changed_at });
    let v2 = serde_json::json!({ "disabled": ["stream_started"], "changed_at": changed_at });
    let up = |version, payload| match UserEvent::from_stored(
        "notification_preferences_changed",
        version,
        payload,
    ) {
        Ok(UserEvent::NotificationPreferencesChanged(p)) => p,
        other => panic!("v{version} upcast to {other:?}"),
    };
    assert_eq!(
        up(1, v1).disabled,
        [NotificationKind::Like, NotificationKind::Share]
    );
    assert_eq!(up(2, v2).disabled, [NotificationKind::StreamStarted]);
    // `message` is a v3 kind: a v2 payload naming it is refused, a v3 one decodes.
    let v3 = serde_json::json!({ "disabled": ["message"], "changed_at": changed_at });
    assert!(UserEvent::from_stored("notification_preferences_changed", 2, v3.clone()).is_err());
    assert_eq!(up(3, v3).disabled, [NotificationKind::Message]);
}

#[test]
fn notifications_read_v1_is_upcast_exactly() {
    use chrono::{DateTime, Utc};
    use nova_event_schemas::user::*;
    let up_to = uuid::Uuid::now_v7();
    let read_at: DateTime<Utc> = "2026-11-30T05:00:00.5Z".parse().unwrap();
    // The view's fixed-width text, as v1 stored it.
    let text = "2026-11-29T23:59:58.123456Z";
    let v1 = serde_json::json!({
        "up_to": up_to, "up_to_created_at": text, "read_at": read_at,
    });
    let event = UserEvent::from_stored("notifications_read", 1, v1).unwrap();
    let UserEvent::NotificationsRead(read) = &event else {
        panic!("upcast to {event:?}");
    };
    assert_eq!(read.up_to, up_to);
    assert_eq!(read.read_at, read_at);
    assert_eq!(
        read.up_to_created_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        text
    );
    // New appends write v2, which decodes as itself.
    assert_eq!(event.schema_version(), 2);
    let back = UserEvent::from_stored("notifications_read", 2, event.to_payload()).unwrap();
    assert_eq!(back, event);
    // A v1 payload that is not a timestamp is a decode error naming v1, not a panic.
    let bad =
        serde_json::json!({ "up_to": up_to, "up_to_created_at": "yesterday", "read_at": read_at });
    let err = UserEvent::from_stored("notifications_read", 1, bad).unwrap_err();
    assert!(err.to_string().contains("notifications_read v1"), "{err}");
    // A version from the future is refused.
    assert!(UserEvent::from_stored("notifications_read", 3, event.to_payload()).is_err());
}

#[test]
fn credential_events_v1_are_upcast_without_their_secrets() {
    use nova_event_schemas::user::*;
    let at = "2026-11-30T05:00:00Z";
    let sid = uuid::Uuid::now_v7();
    let cases = [
        (
            "registered",
            serde_json::json!({"user_id": sid, "username": "a", "display_name": null,
                "password_hash": "$argon2id$v=19$secret", "registered_at": at}),
        ),
        (
            "password_changed",
            serde_json::json!({"password_hash": "$argon2id$v=19$secret", "changed_at": at}),
        ),
        (
            "password_rehashed",
            serde_json::json!({"password_hash": "$argon2id$v=19$secret",
                "previous_algorithm": "sha256", "rehashed_at": at}),
        ),
        (
            "session_started",
            serde_json::json!({"session_id": sid, "refresh_token_hash": "ab12secret",
                "expires_at": at, "started_at": at}),
        ),
        (
            "session_refreshed",
            serde_json::json!({"session_id": sid, "refresh_token_hash": "ab12secret",
                "expires_at": at, "refreshed_at": at}),
        ),
    ];
    for (ty, v1) in cases {
        assert!(v1_secret(ty, 1, &v1).is_some_and(|s| s.contains("secret")));
        let event = UserEvent::from_stored(ty, 1, v1).unwrap();
        // `registered` went on to v3 (personal fields sealed in storage, ADR 0025).
        let current = if ty == "registered" { 3 } else { 2 };
        assert_eq!(event.schema_version(), current, "{ty}");
        let text = event.to_payload().to_string();
        assert!(
            !text.contains("secret") && !text.contains("_hash\""),
            "{ty}: {text}"
        );
        assert!(v1_secret(ty, 2, &event.to_payload()).is_none());
        let back = UserEvent::from_stored(ty, current, event.to_payload()).unwrap();
        assert_eq!(back, event);
    }
}

/// Events stored before personal fields were sealed (ADR 0025) read as they were: the v1 (v2
/// for `registered`) payload is relabelled to the current version, plaintext unchanged.
#[test]
fn plaintext_personal_events_are_upcast_unchanged() {
    use nova_event_schemas::post::PostEvent;
    use nova_event_schemas::stream::StreamEvent;
    let id = uuid::Uuid::now_v7();
    let at = "2026-01-01T00:00:00Z";
    let post = serde_json::json!({"post_id": id, "author_id": id, "content": "hello @bob",
        "media_urls": [], "mentions": [], "created_at": at});
    let PostEvent::Created(p) = PostEvent::from_stored("created", 1, post).unwrap() else {
        panic!("not a post");
    };
    assert_eq!(p.content, "hello @bob");
    let user = serde_json::json!({"user_id": id, "username": "alice", "display_name": "Alice",
        "credential_id": id, "registered_at": at});
    let UserEvent::Registered(r) = UserEvent::from_stored("registered", 2, user).unwrap() else {
        panic!("not a registration");
    };
    assert_eq!(
        (r.username.as_str(), r.display_name.as_deref()),
        ("alice", Some("Alice"))
    );
    let stream = serde_json::json!({"stream_id": id, "broadcaster_id": id, "title": "live!",
        "description": null, "key_id": id, "created_at": at});
    let StreamEvent::Created(c) = StreamEvent::from_stored("created", 1, stream).unwrap() else {
        panic!("not a stream");
    };
    assert_eq!(c.title, "live!");
}

//! Tests of the `user` domain: given/when/then examples for every rule, then property tests
//! that drive random command sequences through `handle_command` + `apply_event`.

use super::*;
use crate::given::given;

// ---------------------------------------------------------------------------------------------
// Fixtures: fixed clock, fixed ids, event and command builders.
// ---------------------------------------------------------------------------------------------

const USER_ID: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
// Credentials are ids in events and states (their hashes are in the credentials table, whose
// rules on what a hash may be are tested in `nova-commands`): one id per kind of hash.
const ARGON: Uuid = Uuid::from_u128(0xc7ed_0000_0000_7000_8000_0000_0000_0001);
const ARGON_NEW: Uuid = Uuid::from_u128(0xc7ed_0000_0000_7000_8000_0000_0000_0002);
const LEGACY_SHA256: Uuid = Uuid::from_u128(0xc7ed_0000_0000_7000_8000_0000_0000_0003);

/// The id of the refresh token named `name` in a test.
fn tok(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

/// 2024-06-01T00:00:00Z.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_717_200_000, 0).expect("valid timestamp")
}

/// `t0` plus `minutes`.
fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn sid(n: u128) -> Uuid {
    Uuid::from_u128(0x5e55_0000_0000_0000_0000_0000_0000_0000 + n)
}

fn fold(events: impl IntoIterator<Item = UserEvent>) -> UserState {
    events
        .into_iter()
        .fold(UserState::default(), User::apply_event)
}

fn registered() -> UserEvent {
    UserEvent::Registered(Registered {
        user_id: USER_ID,
        username: "alice".into(),
        display_name: Some("Alice".into()),
        credential_id: ARGON,
        registered_at: t0(),
    })
}

fn register_cmd(username: &str, credential_id: Uuid) -> UserCommand {
    UserCommand::Register {
        user_id: USER_ID,
        username: username.into(),
        display_name: Some("Alice".into()),
        credential_id,
        now: t0(),
    }
}

fn attempt(password_ok: bool, session: Uuid, token: &str, now: DateTime<Utc>) -> LoginAttempt {
    LoginAttempt {
        password_ok,
        upgraded_credential: None,
        session_id: session,
        refresh_token_id: tok(token),
        expires_at: now + Duration::days(30),
        now,
    }
}

fn login(password_ok: bool, session: Uuid, token: &str, now: DateTime<Utc>) -> UserCommand {
    UserCommand::Login(attempt(password_ok, session, token, now))
}

fn started(session: Uuid, token: &str, now: DateTime<Utc>) -> UserEvent {
    UserEvent::SessionStarted(SessionStarted {
        session_id: session,
        refresh_token_id: tok(token),
        expires_at: now + Duration::days(30),
        started_at: now,
    })
}

fn failed(now: DateTime<Utc>) -> UserEvent {
    UserEvent::LoginFailed(LoginFailed { failed_at: now })
}

fn locked(now: DateTime<Utc>) -> UserEvent {
    UserEvent::Locked(Locked {
        locked_at: now,
        locked_until: now + Duration::minutes(15),
    })
}

fn refresh(session: Uuid, presented: &str, new: &str, now: DateTime<Utc>) -> UserCommand {
    UserCommand::Refresh {
        session_id: session,
        presented_token: Some(tok(presented)),
        new_token: tok(new),
        expires_at: now + Duration::days(30),
        now,
    }
}

fn refreshed(session: Uuid, new: &str, now: DateTime<Utc>) -> UserEvent {
    UserEvent::SessionRefreshed(SessionRefreshed {
        session_id: session,
        refresh_token_id: tok(new),
        expires_at: now + Duration::days(30),
        refreshed_at: now,
    })
}

fn revoked(session: Uuid, reason: RevocationReason, now: DateTime<Utc>) -> UserEvent {
    UserEvent::SessionRevoked(SessionRevoked {
        session_id: session,
        reason,
        revoked_at: now,
    })
}

fn deactivated(now: DateTime<Utc>) -> UserEvent {
    UserEvent::Deactivated(Deactivated {
        deactivated_at: now,
    })
}

fn change_password(ok: bool, new_credential: Uuid, keep: Uuid, now: DateTime<Utc>) -> UserCommand {
    UserCommand::ChangePassword {
        current_password_ok: ok,
        new_credential_id: new_credential,
        keep_session: keep,
        now,
    }
}

fn update_profile(
    display_name: Option<Option<&str>>,
    status: Option<Option<&str>>,
    profile_picture_url: Option<Option<&str>>,
    now: DateTime<Utc>,
) -> UserCommand {
    let own = |f: Option<Option<&str>>| f.map(|v| v.map(str::to_owned));
    UserCommand::UpdateProfile {
        display_name: own(display_name),
        status: own(status),
        profile_picture_url: own(profile_picture_url),
        now,
    }
}

/// One command of every kind except `Register`, all at `now`.
fn every_non_register_command(now: DateTime<Utc>) -> Vec<UserCommand> {
    vec![
        login(true, sid(9), "t9", now),
        login(false, sid(9), "t9", now),
        refresh(sid(1), "t1", "t1b", now),
        UserCommand::Logout {
            session_id: sid(1),
            now,
        },
        update_profile(Some(Some("Bob")), None, None, now),
        change_password(true, ARGON_NEW, sid(1), now),
        UserCommand::Deactivate { now },
    ]
}

// ---------------------------------------------------------------------------------------------
// Registration and username claims.
// ---------------------------------------------------------------------------------------------

#[test]
fn register_emits_registered_with_lower_cased_username() {
    given::<User>([])
        .when(register_cmd("AlIcE", ARGON))
        .then(vec![UserEvent::Registered(Registered {
            user_id: USER_ID,
            username: "alice".into(),
            display_name: Some("Alice".into()),
            credential_id: ARGON,
            registered_at: t0(),
        })]);
}

#[test]
fn registered_state_holds_the_registration() {
    let state = fold([registered()]);
    assert!(state.exists());
    assert_eq!(state.user_id, Some(USER_ID));
    assert_eq!(state.username, "alice");
    assert_eq!(state.display_name.as_deref(), Some("Alice"));
    assert_eq!(state.credential_id, Some(ARGON));
    assert_eq!(state.registered_at, Some(t0()));
    assert!(!state.deactivated);
    assert!(state.sessions.is_empty());
}

#[test]
fn register_twice_is_already_registered() {
    given::<User>([registered()])
        .when(register_cmd("alice", ARGON))
        .then_err(UserError::AlreadyRegistered);
}

#[test]
fn register_on_a_deactivated_user_is_already_registered() {
    given::<User>([registered(), deactivated(at(1))])
        .when(register_cmd("alice", ARGON))
        .then_err(UserError::AlreadyRegistered);
}

// Which hashes a credential may hold (argon2id, or imported legacy SHA-256) is the credentials
// table's rule: `nova_commands::user::vault` tests it.

#[test]
fn register_accepts_an_imported_legacy_credential() {
    let events = given::<User>([])
        .when(register_cmd("alice", LEGACY_SHA256))
        .events();
    assert!(matches!(&events[..], [UserEvent::Registered(r)] if r.credential_id == LEGACY_SHA256));
}

#[test]
fn first_username_claim_wins_lower_cased() {
    given::<UsernameClaim>([])
        .when(ClaimUsername {
            username: "AlIcE".into(),
            user_id: USER_ID,
        })
        .then(vec![UserEvent::UsernameClaimed(UsernameClaimed {
            username: "alice".into(),
            user_id: USER_ID,
        })]);
}

#[test]
fn second_username_claim_is_taken() {
    let claimed = UserEvent::UsernameClaimed(UsernameClaimed {
        username: "alice".into(),
        user_id: USER_ID,
    });
    // Even the same user cannot claim it twice, and another user certainly cannot.
    for user_id in [USER_ID, Uuid::from_u128(2)] {
        given::<UsernameClaim>([claimed.clone()])
            .when(ClaimUsername {
                username: "ALICE".into(),
                user_id,
            })
            .then_err(UserError::UsernameTaken);
    }
}

#[test]
fn claim_and_user_share_the_event_type_without_interfering() {
    // A claim stream only reacts to `UsernameClaimed`; a user stream ignores it.
    let claim_state = [registered(), deactivated(at(1))]
        .into_iter()
        .fold(ClaimState::default(), UsernameClaim::apply_event);
    assert_eq!(claim_state, ClaimState::default());
    let user_state = fold([UserEvent::UsernameClaimed(UsernameClaimed {
        username: "alice".into(),
        user_id: USER_ID,
    })]);
    assert_eq!(user_state, UserState::default());
}

// ---------------------------------------------------------------------------------------------
// Non-existent user.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_command_on_a_missing_user_is_not_found() {
    for command in every_non_register_command(at(1)) {
        given::<User>([])
            .when(command)
            .then_err(UserError::NotFound);
    }
}

// ---------------------------------------------------------------------------------------------
// Login and lockout.
// ---------------------------------------------------------------------------------------------

#[test]
fn login_with_the_right_password_starts_a_session() {
    let now = at(5);
    given::<User>([registered()])
        .when(login(true, sid(1), "t1", now))
        .then(vec![started(sid(1), "t1", now)]);

    let state = fold([registered(), started(sid(1), "t1", now)]);
    assert!(state.session_active(sid(1), now));
    assert!(state.session_active(sid(1), now + Duration::days(30) - Duration::seconds(1)));
    assert!(!state.session_active(sid(1), now + Duration::days(30)));
    assert!(!state.session_active(sid(2), now));
}

#[test]
fn wrong_password_is_a_login_failure() {
    given::<User>([registered()])
        .when(login(false, sid(1), "t1", at(1)))
        .then(vec![failed(at(1))]);
}

#[test]
fn failed_login_ignores_an_upgraded_hash() {
    let mut a = attempt(false, sid(1), "t1", at(1));
    a.upgraded_credential = Some(ARGON_NEW);
    given::<User>([registered()])
        .when(UserCommand::Login(a))
        .then(vec![failed(at(1))]);
}

#[test]
fn successful_login_clears_the_failures() {
    let history = vec![
        registered(),
        failed(at(1)),
        failed(at(2)),
        failed(at(3)),
        failed(at(4)),
        started(sid(1), "t1", at(5)),
    ];
    assert!(fold(history.clone()).recent_failures.is_empty());
    // Four failures before the success no longer count: the next failure does not lock.
    given::<User>(history)
        .when(login(false, sid(2), "t2", at(6)))
        .then(vec![failed(at(6))]);
}

#[test]
fn four_failures_within_the_window_do_not_lock() {
    given::<User>([registered(), failed(at(1)), failed(at(2))])
        .when(login(false, sid(1), "t1", at(3)))
        .then(vec![failed(at(3))]);
    given::<User>([registered(), failed(at(1)), failed(at(2)), failed(at(3))])
        .when(login(false, sid(1), "t1", at(4)))
        .then(vec![failed(at(4))]);
}

#[test]
fn fifth_failure_within_the_window_locks_for_fifteen_minutes() {
    let now = at(10);
    let events = given::<User>([
        registered(),
        failed(at(1)),
        failed(at(2)),
        failed(at(3)),
        failed(at(4)),
    ])
    .when(login(false, sid(1), "t1", now))
    .events();
    assert_eq!(
        events,
        vec![
            failed(now),
            UserEvent::Locked(Locked {
                locked_at: now,
                locked_until: now + LOCKOUT_DURATION,
            }),
        ]
    );
    assert_eq!(LOCKOUT_DURATION, Duration::minutes(15));

    let state = fold(
        [
            registered(),
            failed(at(1)),
            failed(at(2)),
            failed(at(3)),
            failed(at(4)),
        ]
        .into_iter()
        .chain(events),
    );
    assert_eq!(state.locked_until, Some(at(25)));
    assert!(state.recent_failures.is_empty());
    assert!(state.is_locked(now));
    assert!(state.is_locked(at(25) - Duration::seconds(1)));
    assert!(!state.is_locked(at(25)));
}

#[test]
fn fifth_failure_just_inside_the_window_locks() {
    // First failure at 0, fifth at 14:59: all five within 15 minutes.
    let now = at(15) - Duration::seconds(1);
    given::<User>([
        registered(),
        failed(at(0)),
        failed(at(1)),
        failed(at(2)),
        failed(at(3)),
    ])
    .when(login(false, sid(1), "t1", now))
    .then(vec![failed(now), locked(now)]);
}

#[test]
fn failures_spread_over_more_than_fifteen_minutes_do_not_lock() {
    // Exactly 15 minutes after the first failure, it has left the window.
    given::<User>([
        registered(),
        failed(at(0)),
        failed(at(1)),
        failed(at(2)),
        failed(at(3)),
    ])
    .when(login(false, sid(1), "t1", at(15)))
    .then(vec![failed(at(15))]);

    // Evenly spread: never more than four in any 15-minute window.
    let mut history = vec![registered()];
    for i in 0..12 {
        let now = at(i * 4);
        let events = given::<User>(history.clone())
            .when(login(false, sid(1), "t1", now))
            .events();
        assert_eq!(events, vec![failed(now)], "failure #{i} must not lock");
        history.extend(events);
    }
    assert!(!fold(history).is_locked(at(48)));
}

#[test]
fn locked_account_refuses_even_the_right_password() {
    let history = [
        registered(),
        failed(at(1)),
        failed(at(2)),
        failed(at(3)),
        failed(at(4)),
        failed(at(5)),
        locked(at(5)),
    ];
    let until = at(20);
    for now in [at(5), at(10), until - Duration::seconds(1)] {
        given::<User>(history.clone())
            .when(login(true, sid(1), "t1", now))
            .then_err(UserError::Locked { until });
        // A wrong password while locked is refused the same way and not even recorded.
        given::<User>(history.clone())
            .when(login(false, sid(1), "t1", now))
            .then_err(UserError::Locked { until });
    }
}

#[test]
fn lock_expires_after_fifteen_minutes() {
    let history = vec![
        registered(),
        failed(at(1)),
        failed(at(2)),
        failed(at(3)),
        failed(at(4)),
        failed(at(5)),
        locked(at(5)),
    ];
    let until = at(5) + LOCKOUT_DURATION;
    given::<User>(history.clone())
        .when(login(true, sid(1), "t1", until))
        .then(vec![started(sid(1), "t1", until)]);
    // The lock cleared the failures: a single failure after it expires does not re-lock.
    given::<User>(history)
        .when(login(false, sid(1), "t1", until))
        .then(vec![failed(until)]);
}

#[test]
fn a_second_lock_needs_five_new_failures() {
    let mut history = vec![registered()];
    for m in 1..=5 {
        history.extend(
            given::<User>(history.clone())
                .when(login(false, sid(1), "t1", at(m)))
                .events(),
        );
    }
    assert_eq!(history.last(), Some(&locked(at(5))));
    // After expiry (at 20), four failures do not lock, the fifth does.
    for m in 21..=24 {
        let events = given::<User>(history.clone())
            .when(login(false, sid(1), "t1", at(m)))
            .events();
        assert_eq!(events, vec![failed(at(m))]);
        history.extend(events);
    }
    given::<User>(history)
        .when(login(false, sid(1), "t1", at(25)))
        .then(vec![failed(at(25)), locked(at(25))]);
}

#[test]
fn legacy_login_rehashes_then_starts_the_session() {
    let legacy = UserEvent::Registered(Registered {
        user_id: USER_ID,
        username: "bob".into(),
        display_name: None,
        credential_id: LEGACY_SHA256,
        registered_at: t0(),
    });
    let mut a = attempt(true, sid(1), "t1", at(1));
    a.upgraded_credential = Some(ARGON_NEW);
    let events = given::<User>([legacy.clone()])
        .when(UserCommand::Login(a))
        .events();
    assert_eq!(
        events,
        vec![
            UserEvent::PasswordRehashed(PasswordRehashed {
                credential_id: ARGON_NEW,
                previous_algorithm: "sha256".into(),
                rehashed_at: at(1),
            }),
            started(sid(1), "t1", at(1)),
        ]
    );
    let state = fold(std::iter::once(legacy).chain(events));
    assert_eq!(state.credential_id, Some(ARGON_NEW));
    assert!(state.session_active(sid(1), at(1)));
}

// ---------------------------------------------------------------------------------------------
// Refresh-token rotation.
// ---------------------------------------------------------------------------------------------

fn with_session() -> Vec<UserEvent> {
    vec![registered(), started(sid(1), "t1", at(0))]
}

#[test]
fn refresh_rotates_the_token_and_retires_the_old_one() {
    let events = given::<User>(with_session())
        .when(refresh(sid(1), "t1", "t2", at(10)))
        .events();
    assert_eq!(events, vec![refreshed(sid(1), "t2", at(10))]);

    let state = fold(with_session().into_iter().chain(events));
    let session = &state.sessions[&sid(1)];
    assert_eq!(session.current_token, Some(tok("t2")));
    assert!(session.retired_tokens.contains(tok("t1")));
    assert_eq!(session.expires_at, at(10) + Duration::days(30));
    assert!(state.session_active(sid(1), at(10)));
}

#[test]
fn many_refreshes_keep_a_bounded_number_of_retired_hashes_and_still_detect_reuse() {
    let mut history = with_session();
    let mut state = fold(history.clone());
    for i in 1..=1_000 {
        let t = t0() + Duration::seconds(i);
        let e = refreshed(sid(1), &format!("t{}", i + 1), t);
        state = User::apply_event(state, e.clone());
        history.push(e);
    }
    let session = &state.sessions[&sid(1)];
    assert_eq!(session.retired_tokens.len(), RETIRED_TOKENS_KEPT);
    assert!(!session.retired_tokens.contains(tok("t1")));
    assert!(session.retired_tokens.contains(tok("t1000")));
    assert_eq!(fold(history.clone()), state);
    // A recently rotated token still revokes the family; a long-gone one is merely invalid.
    let late = t0() + Duration::seconds(2_000);
    given::<User>(history.clone())
        .when(refresh(sid(1), "t1000", "x", late))
        .then(vec![revoked(
            sid(1),
            RevocationReason::RefreshTokenReused,
            late,
        )]);
    given::<User>(history)
        .when(refresh(sid(1), "t1", "x", late))
        .then_err(UserError::InvalidRefreshToken);
}

#[test]
fn revoked_and_expired_sessions_do_not_accumulate() {
    let mut state = fold([registered()]);
    let mut live_max = 0;
    for i in 0..500u128 {
        // One login a day, each session logged out or left to expire after 30 days.
        let t = t0() + Duration::days(i as i64);
        state = User::apply_event(state, started(sid(i), &format!("t{i}"), t));
        if i % 2 == 0 {
            state = User::apply_event(
                state,
                revoked(sid(i), RevocationReason::Logout, t + Duration::minutes(1)),
            );
            let s = &state.sessions[&sid(i)];
            assert!(s.current_token.is_none() && s.retired_tokens.is_empty());
        }
        live_max = live_max.max(state.sessions.len());
    }
    // At most the sessions started within one refresh lifetime (30 days) are kept.
    assert!(live_max <= 31, "{live_max} sessions retained");
    // A revoked session's id still cannot be started again while it is remembered.
    let last_revoked = sid(498);
    let t = t0() + Duration::days(500);
    given_state_login_refused(&state, last_revoked, t);
}

fn given_state_login_refused(state: &UserState, session: Uuid, now: DateTime<Utc>) {
    assert_eq!(
        User::handle_command(state, login(true, session, "x", now)),
        Err(UserError::SessionIdInUse)
    );
}

#[test]
fn refresh_with_the_new_token_keeps_rotating() {
    let mut history = with_session();
    history.push(refreshed(sid(1), "t2", at(10)));
    given::<User>(history)
        .when(refresh(sid(1), "t2", "t3", at(20)))
        .then(vec![refreshed(sid(1), "t3", at(20))]);
}

#[test]
fn reusing_a_retired_token_revokes_the_session() {
    let mut history = with_session();
    history.push(refreshed(sid(1), "t2", at(10)));
    history.push(refreshed(sid(1), "t3", at(20)));
    let events = given::<User>(history.clone())
        .when(refresh(sid(1), "t1", "t4", at(30)))
        .events();
    assert_eq!(
        events,
        vec![revoked(
            sid(1),
            RevocationReason::RefreshTokenReused,
            at(30)
        )]
    );
    history.extend(events);

    let state = fold(history.clone());
    assert!(!state.session_active(sid(1), at(30)));
    // Even the current token is refused afterwards, and so is the retired one.
    given::<User>(history.clone())
        .when(refresh(sid(1), "t3", "t4", at(31)))
        .then_err(UserError::InvalidRefreshToken);
    given::<User>(history.clone())
        .when(refresh(sid(1), "t1", "t4", at(31)))
        .then_err(UserError::InvalidRefreshToken);
    given::<User>(history)
        .when(UserCommand::Logout {
            session_id: sid(1),
            now: at(31),
        })
        .then_err(UserError::SessionInactive);
}

#[test]
fn reusing_a_retired_token_revokes_even_an_expired_session() {
    let mut history = with_session();
    history.push(refreshed(sid(1), "t2", at(10)));
    let late = at(10) + Duration::days(31);
    given::<User>(history)
        .when(refresh(sid(1), "t1", "t3", late))
        .then(vec![revoked(
            sid(1),
            RevocationReason::RefreshTokenReused,
            late,
        )]);
}

#[test]
fn expired_refresh_token_is_refused() {
    let expires = at(0) + Duration::days(30);
    given::<User>(with_session())
        .when(refresh(sid(1), "t1", "t2", expires))
        .then_err(UserError::InvalidRefreshToken);
    given::<User>(with_session())
        .when(refresh(sid(1), "t1", "t2", expires + Duration::days(1)))
        .then_err(UserError::InvalidRefreshToken);
    let just_before = expires - Duration::seconds(1);
    given::<User>(with_session())
        .when(refresh(sid(1), "t1", "t2", just_before))
        .then(vec![refreshed(sid(1), "t2", just_before)]);
}

#[test]
fn unknown_token_or_session_is_refused_without_revoking() {
    given::<User>(with_session())
        .when(refresh(sid(1), "never-issued", "t2", at(1)))
        .then_err(UserError::InvalidRefreshToken);
    given::<User>(with_session())
        .when(refresh(sid(2), "t1", "t2", at(1)))
        .then_err(UserError::InvalidRefreshToken);
}

#[test]
fn refresh_of_a_logged_out_session_is_refused() {
    let mut history = with_session();
    history.push(revoked(sid(1), RevocationReason::Logout, at(1)));
    given::<User>(history)
        .when(refresh(sid(1), "t1", "t2", at(2)))
        .then_err(UserError::InvalidRefreshToken);
}

// ---------------------------------------------------------------------------------------------
// Logout.
// ---------------------------------------------------------------------------------------------

#[test]
fn logout_revokes_the_session_and_a_second_logout_is_inactive() {
    let events = given::<User>(with_session())
        .when(UserCommand::Logout {
            session_id: sid(1),
            now: at(5),
        })
        .events();
    assert_eq!(
        events,
        vec![revoked(sid(1), RevocationReason::Logout, at(5))]
    );

    let history: Vec<_> = with_session().into_iter().chain(events).collect();
    assert!(!fold(history.clone()).session_active(sid(1), at(5)));
    given::<User>(history)
        .when(UserCommand::Logout {
            session_id: sid(1),
            now: at(6),
        })
        .then_err(UserError::SessionInactive);
}

#[test]
fn logout_of_an_unknown_session_is_inactive() {
    given::<User>(with_session())
        .when(UserCommand::Logout {
            session_id: sid(2),
            now: at(5),
        })
        .then_err(UserError::SessionInactive);
}

#[test]
fn logout_leaves_other_sessions_alone() {
    let mut history = with_session();
    history.push(started(sid(2), "u1", at(1)));
    history.push(revoked(sid(1), RevocationReason::Logout, at(2)));
    let state = fold(history);
    assert!(!state.session_active(sid(1), at(2)));
    assert!(state.session_active(sid(2), at(2)));
}

// ---------------------------------------------------------------------------------------------
// Profile.
// ---------------------------------------------------------------------------------------------

fn with_profile() -> Vec<UserEvent> {
    vec![
        registered(),
        UserEvent::ProfileUpdated(ProfileUpdated {
            display_name: Some("Alice".into()),
            status: Some("busy".into()),
            profile_picture_url: Some("https://img/a.png".into()),
            updated_at: at(1),
        }),
    ]
}

#[test]
fn partial_profile_update_keeps_the_other_fields() {
    given::<User>(with_profile())
        .when(update_profile(None, Some(Some("away")), None, at(2)))
        .then(vec![UserEvent::ProfileUpdated(ProfileUpdated {
            display_name: Some("Alice".into()),
            status: Some("away".into()),
            profile_picture_url: Some("https://img/a.png".into()),
            updated_at: at(2),
        })]);
}

#[test]
fn profile_update_with_some_none_clears_a_field() {
    let events = given::<User>(with_profile())
        .when(update_profile(None, None, Some(None), at(2)))
        .events();
    assert_eq!(
        events,
        vec![UserEvent::ProfileUpdated(ProfileUpdated {
            display_name: Some("Alice".into()),
            status: Some("busy".into()),
            profile_picture_url: None,
            updated_at: at(2),
        })]
    );
    let state = fold(with_profile().into_iter().chain(events));
    assert_eq!(state.display_name.as_deref(), Some("Alice"));
    assert_eq!(state.status.as_deref(), Some("busy"));
    assert_eq!(state.profile_picture_url, None);
}

#[test]
fn no_op_profile_update_yields_no_events() {
    // Nothing requested.
    given::<User>(with_profile())
        .when(update_profile(None, None, None, at(2)))
        .then(vec![]);
    // Everything set to what it already is.
    given::<User>(with_profile())
        .when(update_profile(
            Some(Some("Alice")),
            Some(Some("busy")),
            Some(Some("https://img/a.png")),
            at(2),
        ))
        .then(vec![]);
    // Clearing what is already empty.
    given::<User>([registered()])
        .when(update_profile(None, Some(None), Some(None), at(2)))
        .then(vec![]);
}

// ---------------------------------------------------------------------------------------------
// Password change.
// ---------------------------------------------------------------------------------------------

#[test]
fn change_password_with_the_wrong_current_password_is_refused() {
    given::<User>(with_session())
        .when(change_password(false, ARGON_NEW, sid(1), at(1)))
        .then_err(UserError::WrongPassword);
}

#[test]
fn a_wrong_current_password_counts_toward_the_login_lockout() {
    let mut history = with_session();
    history.extend((1..=4).map(|m| failed(at(m))));
    let events = given::<User>(history.clone())
        .when(UserCommand::PasswordCheckFailed { now: at(5) })
        .events();
    assert_eq!(events, vec![failed(at(5)), locked(at(5))]);
    history.extend(events);
    // Locked: neither a correct password change nor a login nor another check goes through.
    given::<User>(history.clone())
        .when(change_password(true, ARGON_NEW, sid(1), at(6)))
        .then_err(UserError::Locked {
            until: at(5) + LOCKOUT_DURATION,
        });
    given::<User>(history.clone())
        .when(login(true, sid(2), "t2", at(6)))
        .then_err(UserError::Locked {
            until: at(5) + LOCKOUT_DURATION,
        });
    given::<User>(history.clone())
        .when(UserCommand::PasswordCheckFailed { now: at(6) })
        .then_err(UserError::Locked {
            until: at(5) + LOCKOUT_DURATION,
        });
    // After the lock expires the change goes through.
    given::<User>(history)
        .when(change_password(true, ARGON_NEW, sid(1), at(21)))
        .events();
}

#[test]
fn change_password_revokes_every_other_active_session() {
    let history = vec![
        registered(),
        started(sid(1), "a", at(0)),
        started(sid(2), "b", at(1)),
        started(sid(3), "c", at(2)),
        started(sid(4), "d", at(3)),
        revoked(sid(4), RevocationReason::Logout, at(4)),
    ];
    let events = given::<User>(history.clone())
        .when(change_password(true, ARGON_NEW, sid(2), at(5)))
        .events();
    assert_eq!(
        events,
        vec![
            UserEvent::PasswordChanged(PasswordChanged {
                credential_id: ARGON_NEW,
                changed_at: at(5),
            }),
            revoked(sid(1), RevocationReason::PasswordChanged, at(5)),
            revoked(sid(3), RevocationReason::PasswordChanged, at(5)),
        ]
    );
    let state = fold(history.into_iter().chain(events));
    assert_eq!(state.credential_id, Some(ARGON_NEW));
    assert!(state.session_active(sid(2), at(5)));
    for other in [sid(1), sid(3), sid(4)] {
        assert!(!state.session_active(other, at(5)));
    }
}

#[test]
fn change_password_without_sessions_only_changes_the_hash() {
    given::<User>([registered()])
        .when(change_password(true, ARGON_NEW, sid(1), at(5)))
        .then(vec![UserEvent::PasswordChanged(PasswordChanged {
            credential_id: ARGON_NEW,
            changed_at: at(5),
        })]);
}

// ---------------------------------------------------------------------------------------------
// Deactivation.
// ---------------------------------------------------------------------------------------------

#[test]
fn deactivate_revokes_all_active_sessions_then_deactivates() {
    let history = vec![
        registered(),
        started(sid(1), "a", at(0)),
        started(sid(2), "b", at(1)),
        started(sid(3), "c", at(2)),
        revoked(sid(2), RevocationReason::Logout, at(3)),
    ];
    let events = given::<User>(history.clone())
        .when(UserCommand::Deactivate { now: at(4) })
        .events();
    assert_eq!(
        events,
        vec![
            revoked(sid(1), RevocationReason::Deactivated, at(4)),
            revoked(sid(3), RevocationReason::Deactivated, at(4)),
            deactivated(at(4)),
        ]
    );
    let state = fold(history.into_iter().chain(events));
    assert!(state.deactivated);
    for s in [sid(1), sid(2), sid(3)] {
        assert!(!state.session_active(s, at(4)));
    }
}

#[test]
fn only_a_deactivated_user_is_erased_and_only_once() {
    let erased = UserEvent::Erased(Erased {
        user_id: USER_ID,
        erased_at: at(5),
    });
    given::<User>(vec![registered()])
        .when(UserCommand::Erase { now: at(5) })
        .then_err(UserError::NotDeactivated);
    given::<User>(vec![])
        .when(UserCommand::Erase { now: at(5) })
        .then_err(UserError::NotFound);
    given::<User>(vec![registered(), deactivated(at(4))])
        .when(UserCommand::Erase { now: at(5) })
        .then(vec![erased.clone()]);
    given::<User>(vec![registered(), deactivated(at(4)), erased.clone()])
        .when(UserCommand::Erase { now: at(6) })
        .then(vec![]);
    // Live, the fold leaves what a replay of the sealed history reads once the key is gone.
    let state = fold([registered(), deactivated(at(4)), erased]);
    assert!(state.erased);
    assert_eq!(state.username, nova_event_schemas::personal::ERASED);
    assert_eq!(
        state.display_name.as_deref(),
        Some(nova_event_schemas::personal::ERASED)
    );
    assert_eq!(state.status, None);
}

#[test]
fn every_command_on_a_deactivated_user_is_refused() {
    let history = vec![
        registered(),
        started(sid(1), "t1", at(0)),
        revoked(sid(1), RevocationReason::Deactivated, at(1)),
        deactivated(at(1)),
    ];
    for command in every_non_register_command(at(2)) {
        given::<User>(history.clone())
            .when(command)
            .then_err(UserError::Deactivated);
    }
}

#[test]
fn a_deactivated_user_has_no_active_session_even_if_one_was_left_unrevoked() {
    // `session_active` also checks the account flag, e.g. for streams written before the
    // revocations were emitted.
    let state = fold([
        registered(),
        started(sid(1), "t1", at(0)),
        deactivated(at(1)),
    ]);
    assert!(!state.session_active(sid(1), at(1)));
}

#[test]
fn granting_a_role_is_idempotent() {
    let mut history = with_session();
    let events = given::<User>(history.clone())
        .when(UserCommand::GrantRole {
            role: Role::Admin,
            now: at(1),
        })
        .events();
    assert!(matches!(&events[..], [UserEvent::RoleGranted(r)] if r.role == Role::Admin));
    history.extend(events);
    given::<User>(history)
        .when(UserCommand::GrantRole {
            role: Role::Admin,
            now: at(2),
        })
        .then(vec![]);
}

#[test]
fn a_session_revoked_for_token_reuse_cannot_be_restarted() {
    let mut history = with_session();
    history.push(refreshed(sid(1), "t2", at(1)));
    history.push(revoked(sid(1), RevocationReason::RefreshTokenReused, at(2)));
    if let Ok(events) =
        User::handle_command(&fold(history.clone()), login(true, sid(1), "x", at(3)))
    {
        history.extend(events);
    }
    assert!(!fold(history.clone()).session_active(sid(1), at(3)));
    given::<User>(history)
        .when(login(true, sid(1), "x", at(3)))
        .then_err(UserError::SessionIdInUse);
}

// ---------------------------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Refresh tokens come from a small pool so that rotated tokens come back.
    const TOKENS: usize = 4;
    /// Refresh, logout and `keep_session` pick from this many ids; logins mint ids in order
    /// (`sid(0)`, `sid(1)`, ...) like the command handler does with fresh UUIDv7s, so most
    /// picks hit a session that exists and some miss.
    const SESSION_POOL: u128 = 6;

    fn token(i: usize) -> Uuid {
        tok(&format!("tok-{i}"))
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register {
            legacy_hash: bool,
        },
        Login {
            password_ok: bool,
            /// 0: none, 1 and 2: a replacement credential (two different ids).
            upgrade: u8,
            token: usize,
            ttl_minutes: i64,
        },
        Refresh {
            session: u128,
            presented: usize,
            new: usize,
            ttl_minutes: i64,
        },
        Logout {
            session: u128,
        },
        UpdateProfile {
            display_name: Option<Option<&'static str>>,
            status: Option<Option<&'static str>>,
            picture: Option<Option<&'static str>>,
        },
        ChangePassword {
            ok: bool,
            valid_hash: bool,
            keep: u128,
        },
        PasswordCheckFailed,
        Deactivate,
    }

    fn field() -> impl Strategy<Value = Option<Option<&'static str>>> {
        prop::option::of(prop::option::of(prop::sample::select(vec!["a", "b"])))
    }

    fn op() -> impl Strategy<Value = Op> {
        let ttl = 1i64..180;
        prop_oneof![
            1 => any::<bool>().prop_map(|legacy_hash| Op::Register { legacy_hash }),
            10 => (prop::bool::weighted(0.4), prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], 0..TOKENS, ttl.clone())
                .prop_map(|(password_ok, upgrade, token, ttl_minutes)| Op::Login {
                    password_ok,
                    upgrade,
                    token,
                    ttl_minutes,
                }),
            8 => (0..SESSION_POOL, 0..TOKENS, 0..TOKENS, ttl)
                .prop_map(|(session, presented, new, ttl_minutes)| Op::Refresh {
                    session,
                    presented,
                    new,
                    ttl_minutes,
                }),
            3 => (0..SESSION_POOL).prop_map(|session| Op::Logout { session }),
            2 => (field(), field(), field()).prop_map(|(display_name, status, picture)| {
                Op::UpdateProfile { display_name, status, picture }
            }),
            2 => (any::<bool>(), prop::bool::weighted(0.8), 0..SESSION_POOL)
                .prop_map(|(ok, valid_hash, keep)| Op::ChangePassword { ok, valid_hash, keep }),
            2 => Just(Op::PasswordCheckFailed),
            1 => Just(Op::Deactivate),
        ]
    }

    /// Time between two commands: often seconds (so that five failures can fall within the
    /// lockout window), sometimes minutes, rarely hours (so that locks and sessions expire).
    fn step() -> impl Strategy<Value = i64> {
        prop_oneof![
            6 => 0i64..120,
            3 => 60i64..(20 * 60),
            1 => 3_600i64..(4 * 3_600),
        ]
    }

    fn script() -> impl Strategy<Value = Vec<(i64, Op)>> {
        prop::collection::vec((step(), op()), 1..60)
    }

    fn to_command(op: Op, now: DateTime<Utc>, next_session: &mut u128) -> UserCommand {
        match op {
            Op::Register { legacy_hash } => UserCommand::Register {
                user_id: USER_ID,
                username: "Alice".into(),
                display_name: None,
                credential_id: if legacy_hash { LEGACY_SHA256 } else { ARGON },
                now,
            },
            Op::Login {
                password_ok,
                upgrade,
                token: t,
                ttl_minutes,
            } => {
                let session_id = sid(*next_session);
                *next_session += 1;
                UserCommand::Login(LoginAttempt {
                    password_ok,
                    upgraded_credential: match upgrade {
                        0 => None,
                        1 => Some(ARGON_NEW),
                        _ => Some(LEGACY_SHA256),
                    },
                    session_id,
                    refresh_token_id: token(t),
                    expires_at: now + Duration::minutes(ttl_minutes),
                    now,
                })
            }
            Op::Refresh {
                session,
                presented,
                new,
                ttl_minutes,
            } => UserCommand::Refresh {
                session_id: sid(session),
                presented_token: Some(token(presented)),
                new_token: token(new),
                expires_at: now + Duration::minutes(ttl_minutes),
                now,
            },
            Op::Logout { session } => UserCommand::Logout {
                session_id: sid(session),
                now,
            },
            Op::UpdateProfile {
                display_name,
                status,
                picture,
            } => update_profile(display_name, status, picture, now),
            Op::ChangePassword {
                ok,
                valid_hash,
                keep,
            } => change_password(
                ok,
                if valid_hash { ARGON_NEW } else { LEGACY_SHA256 },
                sid(keep),
                now,
            ),
            Op::PasswordCheckFailed => UserCommand::PasswordCheckFailed { now },
            Op::Deactivate => UserCommand::Deactivate { now },
        }
    }

    fn is_session_grant(e: &UserEvent) -> Option<Uuid> {
        match e {
            UserEvent::SessionStarted(e) => Some(e.session_id),
            UserEvent::SessionRefreshed(e) => Some(e.session_id),
            _ => None,
        }
    }

    /// Runs the script and checks, after every command, that folding the whole history gives
    /// the state the handler saw, and the domain invariants.
    fn run(script: Vec<(i64, Op)>) -> Result<(), TestCaseError> {
        let mut now = t0();
        let mut next_session = 0u128;
        let mut history: Vec<UserEvent> = Vec::new();
        let mut state = UserState::default();

        let register = to_command(Op::Register { legacy_hash: false }, now, &mut next_session);
        let events = User::handle_command(&state, register).expect("first registration");
        for e in events {
            state = User::apply_event(state, e.clone());
            history.push(e);
        }

        let mut reused: HashSet<Uuid> = HashSet::new();
        for (seconds, op) in script {
            now += Duration::seconds(seconds);
            prop_assert_eq!(&fold(history.clone()), &state, "rebuild before command");

            let command = to_command(op, now, &mut next_session);
            let before = state.clone();
            let events = User::handle_command(&before, command.clone()).unwrap_or_default();

            if before.deactivated {
                prop_assert!(events.is_empty(), "deactivated user emitted {:?}", events);
            }
            for e in &events {
                if let Some(s) = is_session_grant(e) {
                    prop_assert!(!before.deactivated, "grant {:?} after deactivation", e);
                    prop_assert!(!reused.contains(&s), "grant {:?} on a reused family", e);
                }
                if matches!(e, UserEvent::SessionStarted(_)) {
                    prop_assert!(!before.is_locked(now), "session started while locked");
                }
                if let UserEvent::SessionRefreshed(r) = e {
                    // Only the current, unexpired token of a live session rotates.
                    let s = &before.sessions[&r.session_id];
                    prop_assert!(!s.revoked && now < s.expires_at);
                    if let UserCommand::Refresh {
                        presented_token, ..
                    } = &command
                    {
                        prop_assert_eq!(&s.current_token, presented_token);
                        let presented = presented_token.unwrap_or_default();
                        prop_assert!(!s.retired_tokens.contains(presented));
                    }
                }
                if let UserEvent::Locked(l) = e {
                    prop_assert_eq!(l.locked_until, now + LOCKOUT_DURATION);
                }
            }

            for e in events {
                if let UserEvent::SessionRevoked(SessionRevoked {
                    session_id,
                    reason: RevocationReason::RefreshTokenReused,
                    ..
                }) = &e
                {
                    reused.insert(*session_id);
                }
                state = User::apply_event(state, e.clone());
                history.push(e);
            }

            // (a) Rebuild from all events == incremental state.
            prop_assert_eq!(&fold(history.clone()), &state, "rebuild after command");

            // (b) Invariants.
            if state.deactivated {
                for id in state.sessions.keys() {
                    prop_assert!(!state.session_active(*id, now), "active after deactivation");
                }
            }
            for id in &reused {
                prop_assert!(
                    !state.session_active(*id, now),
                    "reused family {} active",
                    id
                );
            }
            let failures = history
                .iter()
                .filter(|e| matches!(e, UserEvent::LoginFailed(_)))
                .count();
            let locks = history
                .iter()
                .filter(|e| matches!(e, UserEvent::Locked(_)))
                .count();
            prop_assert!(
                locks <= failures / LOCKOUT_THRESHOLD,
                "{} locks for {} failures",
                locks,
                failures
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_command_sequences_keep_the_invariants(script in script()) {
            run(script)?;
        }
    }

    /// Sanity check of the generator: the interesting paths are actually reached.
    #[test]
    fn generator_reaches_locks_reuse_and_deactivation() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
        );
        let (mut locks, mut reuses, mut deactivations, mut refreshes) = (0, 0, 0, 0);
        for _ in 0..256 {
            let script = script().new_tree(&mut runner).expect("tree").current();
            let mut now = t0();
            let mut next = 0u128;
            let mut state = fold([registered()]);
            for (seconds, op) in script {
                now += Duration::seconds(seconds);
                let command = to_command(op, now, &mut next);
                for e in User::handle_command(&state, command).unwrap_or_default() {
                    match &e {
                        UserEvent::Locked(_) => locks += 1,
                        UserEvent::SessionRefreshed(_) => refreshes += 1,
                        UserEvent::Deactivated(_) => deactivations += 1,
                        UserEvent::SessionRevoked(r)
                            if r.reason == RevocationReason::RefreshTokenReused =>
                        {
                            reuses += 1
                        }
                        _ => {}
                    }
                    state = User::apply_event(state, e);
                }
            }
        }
        assert!(locks > 0, "no lock reached");
        assert!(reuses > 0, "no token reuse reached");
        assert!(deactivations > 0, "no deactivation reached");
        assert!(refreshes > 0, "no refresh reached");
    }
}

// ---------------------------------------------------------------------------------------------
// Notification settings and read marker (owned by the user; the notification view projects them).
// ---------------------------------------------------------------------------------------------

#[test]
fn notification_preferences_change_only_when_different() {
    let disabled: BTreeSet<NotificationKind> = [NotificationKind::Like].into();
    let events = given::<User>([registered()])
        .when(UserCommand::SetNotificationPreferences {
            disabled: disabled.clone(),
            now: at(1),
        })
        .events();
    assert_eq!(
        events,
        vec![UserEvent::NotificationPreferencesChanged(
            NotificationPreferencesChanged {
                disabled: vec![NotificationKind::Like],
                changed_at: at(1),
            }
        )]
    );
    let mut history = vec![registered()];
    history.extend(events);
    given::<User>(history.clone())
        .when(UserCommand::SetNotificationPreferences {
            disabled,
            now: at(2),
        })
        .then(vec![]);
    // Switching everything back on is a change too.
    let events = given::<User>(history)
        .when(UserCommand::SetNotificationPreferences {
            disabled: BTreeSet::new(),
            now: at(3),
        })
        .events();
    assert!(
        matches!(&events[..], [UserEvent::NotificationPreferencesChanged(p)] if p.disabled.is_empty())
    );
}

#[test]
fn read_marker_only_moves_forward() {
    let (n1, n2) = (sid(101), sid(102));
    let read = |id: Uuid, ts: &str, now| UserCommand::MarkNotificationsRead {
        up_to: id,
        up_to_created_at: ts.parse().unwrap(),
        now,
    };
    let first = given::<User>([registered()])
        .when(read(n2, "2024-06-01T00:05:00.000000Z", at(6)))
        .events();
    assert_eq!(first.len(), 1);
    let mut history = vec![registered()];
    history.extend(first);
    // An older notification, or the same one again, leaves the marker where it is.
    given::<User>(history.clone())
        .when(read(n1, "2024-06-01T00:01:00.000000Z", at(7)))
        .then(vec![]);
    given::<User>(history.clone())
        .when(read(n2, "2024-06-01T00:05:00.000000Z", at(7)))
        .then(vec![]);
    let later = given::<User>(history)
        .when(read(n1, "2024-06-01T00:09:00.000000Z", at(10)))
        .events();
    assert!(matches!(&later[..], [UserEvent::NotificationsRead(r)] if r.up_to == n1));
}

#[test]
fn notification_commands_need_an_active_account() {
    given::<User>([registered(), deactivated(at(1))])
        .when(UserCommand::SetNotificationPreferences {
            disabled: BTreeSet::new(),
            now: at(2),
        })
        .then_err(UserError::Deactivated);
}

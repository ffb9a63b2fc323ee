//! Tests of the `conversation` domain: given/when/then examples for every rule, then a
//! property test: over random command sequences, `seq` stays gap-free and a client message id
//! never yields a second message.

use proptest::prelude::*;

use super::*;
use crate::given::given;

const A: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000a);
const B: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000b);
const C: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000c);
const G: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_717_200_000, 0).expect("valid timestamp")
}

fn group() -> ConversationEvent {
    ConversationEvent::Created(Created {
        conversation_id: G,
        kind: Kind::Group,
        name: Some("g".into()),
        creator_id: A,
        member_ids: vec![A, B],
        admin_ids: vec![A],
        request_to: None,
        created_at: t0(),
    })
}

fn direct(request: bool) -> ConversationEvent {
    let id = direct_conversation_id(A, B);
    ConversationEvent::Created(Created {
        conversation_id: id,
        kind: Kind::Direct,
        name: None,
        creator_id: A,
        member_ids: vec![A, B],
        admin_ids: vec![],
        request_to: request.then_some(B),
        created_at: t0(),
    })
}

fn new_message(sender: Uuid, client: &str, n: u128) -> NewMessage {
    NewMessage {
        message_id: Uuid::from_u128(0x1000 + n),
        sender,
        sender_device_id: "D".into(),
        session_id: "s".into(),
        ciphertext: format!("c{n}"),
        client_message_id: client.into(),
        blocked: false,
    }
}

fn sent(conversation: Uuid, m: &NewMessage, seq: i64) -> ConversationEvent {
    ConversationEvent::MessageSent(MessageSent {
        conversation_id: conversation,
        message_id: m.message_id,
        seq,
        sender_id: m.sender,
        sender_device_id: m.sender_device_id.clone(),
        session_id: m.session_id.clone(),
        ciphertext: m.ciphertext.clone(),
        client_message_id: m.client_message_id.clone(),
        sent_at: t0(),
    })
}

fn send(m: NewMessage) -> ConversationCommand {
    ConversationCommand::Send {
        message: m,
        now: t0(),
    }
}

#[test]
fn creating_twice_is_refused_and_a_direct_request_names_the_recipient() {
    let events = given::<Conversation>([])
        .when(ConversationCommand::Create {
            id: direct_conversation_id(A, B),
            kind: Kind::Direct,
            name: None,
            creator: A,
            others: vec![B],
            request: true,
            now: t0(),
        })
        .events();
    assert_eq!(events, vec![direct(true)]);
    given::<Conversation>([direct(false)])
        .when(ConversationCommand::Create {
            id: direct_conversation_id(A, B),
            kind: Kind::Direct,
            name: None,
            creator: B,
            others: vec![A],
            request: false,
            now: t0(),
        })
        .then_err(ConversationError::AlreadyExists);
}

#[test]
fn messages_get_gap_free_seq_and_client_ids_are_idempotent() {
    let m1 = new_message(A, "one", 1);
    given::<Conversation>([group()])
        .when(send(m1.clone()))
        .then(vec![sent(G, &m1, 1)]);
    let m2 = new_message(B, "one", 2);
    given::<Conversation>([group(), sent(G, &m1, 1)])
        .when(send(m2.clone()))
        .then(vec![sent(G, &m2, 2)]);
    // The same sender and client id again: nothing new.
    given::<Conversation>([group(), sent(G, &m1, 1)])
        .when(send(new_message(A, "one", 3)))
        .then(vec![]);
    given::<Conversation>([group()])
        .when(send(new_message(C, "x", 4)))
        .then_err(ConversationError::NotMember);
}

#[test]
fn blocks_and_declined_requests_refuse_messages_and_a_reply_accepts() {
    let id = direct_conversation_id(A, B);
    let mut blocked = new_message(A, "b", 1);
    blocked.blocked = true;
    given::<Conversation>([direct(false)])
        .when(send(blocked))
        .then_err(ConversationError::Blocked);
    let declined = ConversationEvent::RequestDeclined(RequestDeclined {
        conversation_id: id,
        user_id: B,
        declined_at: t0(),
    });
    given::<Conversation>([direct(true), declined])
        .when(send(new_message(A, "x", 2)))
        .then_err(ConversationError::RequestDeclined);
    let reply = new_message(B, "r", 3);
    given::<Conversation>([direct(true)])
        .when(send(reply.clone()))
        .then(vec![
            ConversationEvent::RequestAccepted(RequestAccepted {
                conversation_id: id,
                user_id: B,
                accepted_at: t0(),
            }),
            sent(id, &reply, 1),
        ]);
    given::<Conversation>([direct(true)])
        .when(ConversationCommand::Accept { by: A, now: t0() })
        .then_err(ConversationError::NoRequest);
    given::<Conversation>([direct(true)])
        .when(ConversationCommand::Decline { by: B, now: t0() })
        .then(vec![ConversationEvent::RequestDeclined(RequestDeclined {
            conversation_id: id,
            user_id: B,
            declined_at: t0(),
        })]);
}

#[test]
fn only_admins_manage_members_and_anyone_may_leave() {
    let add = |by| ConversationCommand::AddMember {
        by,
        user: C,
        now: t0(),
    };
    given::<Conversation>([group()])
        .when(add(B))
        .then_err(ConversationError::NotAdmin);
    given::<Conversation>([group()])
        .when(add(A))
        .then(vec![ConversationEvent::MemberAdded(MemberAdded {
            conversation_id: G,
            user_id: C,
            added_by: A,
            added_at: t0(),
        })]);
    let leave = ConversationCommand::RemoveMember {
        by: B,
        user: B,
        now: t0(),
    };
    let removed = ConversationEvent::MemberRemoved(MemberRemoved {
        conversation_id: G,
        user_id: B,
        removed_by: B,
        removed_at: t0(),
    });
    given::<Conversation>([group()])
        .when(leave)
        .then(vec![removed.clone()]);
    given::<Conversation>([group(), removed])
        .when(send(new_message(B, "after", 1)))
        .then_err(ConversationError::NotMember);
    given::<Conversation>([direct(false)])
        .when(add(A))
        .then_err(ConversationError::DirectMembership);
}

#[test]
fn only_the_sender_edits_or_recalls_and_recalled_messages_stay_recalled() {
    let m = new_message(A, "one", 1);
    let history = [group(), sent(G, &m, 1)];
    let edit = |by| ConversationCommand::Edit {
        by,
        message_id: m.message_id,
        session_id: "s".into(),
        ciphertext: "new".into(),
        now: t0(),
    };
    given::<Conversation>(history.clone())
        .when(edit(B))
        .then_err(ConversationError::NotSender);
    given::<Conversation>(history.clone())
        .when(edit(A))
        .then(vec![ConversationEvent::MessageEdited(MessageEdited {
            conversation_id: G,
            message_id: m.message_id,
            seq: 1,
            session_id: "s".into(),
            ciphertext: "new".into(),
            edited_at: t0(),
        })]);
    let recalled = ConversationEvent::MessageRecalled(MessageRecalled {
        conversation_id: G,
        message_id: m.message_id,
        seq: 1,
        recalled_at: t0(),
    });
    let recall = |by| ConversationCommand::Recall {
        by,
        message_id: m.message_id,
        now: t0(),
    };
    given::<Conversation>(history.clone())
        .when(recall(B))
        .then_err(ConversationError::NotSender);
    given::<Conversation>(history.clone())
        .when(recall(A))
        .then(vec![recalled.clone()]);
    let after = [group(), sent(G, &m, 1), recalled];
    given::<Conversation>(after.clone())
        .when(recall(A))
        .then(vec![]);
    given::<Conversation>(after)
        .when(edit(A))
        .then_err(ConversationError::Recalled);
}

#[test]
fn reactions_toggle_and_reads_only_move_forward() {
    let m = new_message(A, "one", 1);
    let history = [group(), sent(G, &m, 1)];
    let react = |on| ConversationCommand::React {
        by: B,
        message_id: m.message_id,
        emoji: "👍".into(),
        on,
        now: t0(),
    };
    let r = Reaction {
        conversation_id: G,
        message_id: m.message_id,
        seq: 1,
        user_id: B,
        emoji: "👍".into(),
        at: t0(),
    };
    given::<Conversation>(history.clone())
        .when(react(true))
        .then(vec![ConversationEvent::ReactionAdded(r.clone())]);
    given::<Conversation>(history.clone())
        .when(react(false))
        .then(vec![]);
    let with = [
        group(),
        sent(G, &m, 1),
        ConversationEvent::ReactionAdded(r.clone()),
    ];
    given::<Conversation>(with.clone())
        .when(react(true))
        .then(vec![]);
    given::<Conversation>(with)
        .when(react(false))
        .then(vec![ConversationEvent::ReactionRemoved(r)]);
    let read = |up_to_seq| ConversationCommand::MarkRead {
        by: B,
        up_to_seq,
        now: t0(),
    };
    given::<Conversation>(history.clone())
        .when(read(2))
        .then_err(ConversationError::BeyondLastMessage);
    let marked = ConversationEvent::Read(Read {
        conversation_id: G,
        user_id: B,
        up_to_seq: 1,
        read_at: t0(),
    });
    given::<Conversation>(history.clone())
        .when(read(1))
        .then(vec![marked.clone()]);
    given::<Conversation>([group(), sent(G, &m, 1), marked])
        .when(read(1))
        .then(vec![]);
}

#[test]
fn a_deactivated_user_departs_even_a_direct_conversation() {
    let id = direct_conversation_id(A, B);
    let depart = || ConversationCommand::Depart { user: B, now: t0() };
    let removed = ConversationEvent::MemberRemoved(MemberRemoved {
        conversation_id: id,
        user_id: B,
        removed_by: B,
        removed_at: t0(),
    });
    given::<Conversation>([direct(false)])
        .when(depart())
        .then(vec![removed.clone()]);
    given::<Conversation>([direct(false), removed])
        .when(depart())
        .then(vec![]);
}

proptest! {
    /// Random sends (by members and a non-member, with repeated client ids) and removals:
    /// `seq` is 1, 2, 3, … and each (sender, client id) has at most one message.
    #[test]
    fn seq_is_gap_free_and_client_ids_are_unique(
        ops in proptest::collection::vec((0usize..3, 0u8..4, any::<bool>()), 1..60)
    ) {
        let users = [A, B, C];
        let mut state = given_state([group()]);
        let mut n = 0u128;
        for (who, client, leave) in ops {
            let user = users[who];
            let command = if leave && user == B {
                ConversationCommand::RemoveMember { by: B, user: B, now: t0() }
            } else {
                n += 1;
                send(new_message(user, &format!("c{client}"), n))
            };
            if let Ok(events) = Conversation::handle_command(&state, command) {
                for e in events {
                    state = Conversation::apply_event(state, e);
                }
            }
        }
        let mut seqs: Vec<i64> = state.messages.values().map(|m| m.seq).collect();
        seqs.sort();
        prop_assert_eq!(seqs, (1..=state.last_seq).collect::<Vec<_>>());
        prop_assert_eq!(state.client_ids.len(), state.messages.len());
        prop_assert!(state.messages.values().all(|m| m.sender != C));
    }
}

fn given_state<const N: usize>(events: [ConversationEvent; N]) -> ConversationState {
    events
        .into_iter()
        .fold(ConversationState::default(), Conversation::apply_event)
}

//! Routes of the `messaging` area (API.md "Messaging"): conversations, members, message
//! requests, messages (ciphertext only), reactions and read receipts. Commands answer with
//! `X-Nova-Position: conversation:<pos>`; lists come from the `conversation_view` and honour
//! `X-Nova-Min-Position`. Who may read a conversation is decided by the conversation itself
//! (the command side), so a removed member is refused at once, not after the view caught up.

use std::collections::BTreeMap;

use axum::extract::State;
use nova_aggregates::conversation::Kind;
use nova_commands::conversation::{
    Outgoing, MAX_CIPHERTEXT, MAX_EMOJI, MAX_ID, MAX_MEMBERS, MAX_NAME,
};
use nova_event_schemas::Domain;
use nova_projections::conversation_view::NAME;
use nova_queries::conversation as view;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{
    Actor, Answer, Json, ListFilter, MinPosition, PageBody, PageParams, PageQuery, Path, Query,
    Version,
};
use super::openapi::{self as doc, Text};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(accept))
        .routes(routes!(decline))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
        .routes(routes!(send, messages))
        .routes(routes!(edit, recall))
        .routes(routes!(react, unreact))
        .routes(routes!(read))
}

const CONSUMES: &[Domain] = &[Domain::Conversation];

crate::views!(
    /// The conversation view.
    ConversationReads: (NAME, CONSUMES)
);

/// A new conversation; its schema is written out below (`direct` and `group` take different
/// members and names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    /// `direct` or `group`.
    pub kind: Kind,
    /// The other members (direct: exactly one).
    pub member_ids: Vec<Uuid>,
    /// Groups only.
    pub name: Option<String>,
}

impl utoipa::PartialSchema for NewConversation {
    fn schema() -> RefOr<Schema> {
        let members = |min: usize, max: usize| {
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                )
                .min_items(Some(min))
                .max_items(Some(max))
        };
        let kind = |k: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([k]))
        };
        let direct = ObjectBuilder::new()
            .property("kind", kind("direct"))
            .property("member_ids", members(1, 1))
            .required("kind")
            .required("member_ids")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some("a direct conversation: the one other member"));
        let group = ObjectBuilder::new()
            .property("kind", kind("group"))
            .property("member_ids", members(1, MAX_MEMBERS - 1))
            .property(
                "name",
                doc::nullable(doc::text(1, MAX_NAME, Text::Printable)),
            )
            .required("kind")
            .required("member_ids")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some("a group: 1–255 other members and an optional name"));
        OneOfBuilder::new().item(direct).item(group).into()
    }
}

impl ToSchema for NewConversation {}

#[derive(Serialize, ToSchema)]
pub struct ConversationId {
    pub conversation_id: Uuid,
}

/// Start a conversation. A direct conversation with the same person answers the existing one
/// (200); with someone who does not follow the caller it is a message request to them.
#[utoipa::path(post, path = "/v1/conversations", tag = "messaging",
    security(("bearer" = [])),
    request_body = NewConversation,
    responses(
        (status = 201, body = ConversationId),
        (status = 200, description = "the existing direct conversation", body = ConversationId),
        (status = 404, description = "a member is not an active user", body = ErrorBody),
        (status = 422, description = "blocked", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<NewConversation>,
) -> Result<Answer<ConversationId>, AppError> {
    let (id, created, done) = state
        .conversations
        .create(
            &actor.ctx,
            actor.user_id,
            body.kind,
            &body.member_ids,
            body.name,
        )
        .await?;
    let answer = ConversationId {
        conversation_id: id,
    };
    Ok(if created {
        Answer::created(Domain::Conversation, done.position, answer)
    } else {
        Answer::ok(Domain::Conversation, done.position, answer)
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RequestsFilter {
    /// List the message requests waiting for the caller instead.
    requests: Option<bool>,
}

impl ListFilter for RequestsFilter {
    const KEYS: &'static [&'static str] = &["requests"];
}

#[derive(Serialize, ToSchema)]
pub struct ConversationItem {
    pub conversation_id: Uuid,
    pub kind: String,
    pub name: Option<String>,
    /// `active` or `request`.
    pub state: String,
    #[schema(value_type = String)]
    pub last_activity_at: nova_infra::readmodel::Timestamp,
    pub last_seq: i64,
    pub read_seq: i64,
    pub unread_count: i64,
}

impl From<view::ConversationRow> for ConversationItem {
    fn from(r: view::ConversationRow) -> Self {
        ConversationItem {
            conversation_id: r.conversation_id,
            kind: r.kind,
            name: r.name,
            state: r.state,
            last_activity_at: r.last_activity_at,
            last_seq: r.last_seq,
            read_seq: r.read_seq,
            unread_count: r.unread_count,
        }
    }
}

/// The caller's conversations, latest activity first, with unread counts.
#[utoipa::path(get, path = "/v1/conversations", tag = "messaging",
    security(("bearer" = [])),
    params(PageParams, RequestsFilter, MinPosition<ConversationReads>),
    responses(
        (status = 200, body = PageBody<ConversationItem>),
    ))]
async fn list(
    State(state): State<AppState>,
    actor: Actor,
    PageQuery(page, filter): PageQuery<RequestsFilter>,
    min: MinPosition<ConversationReads>,
) -> Result<Json<PageBody<ConversationItem>>, AppError> {
    min.wait(&state).await?;
    let rows = view::list(
        &state.db.any,
        actor.user_id,
        filter.requests.unwrap_or(false),
        &page,
    )
    .await?;
    Ok(Json(rows.into()))
}

/// Accept a message request.
#[utoipa::path(post, path = "/v1/conversations/{id}/accept", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id")),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "no_request", body = ErrorBody),
    ))]
async fn accept(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .answer_request(&actor.ctx, id, actor.user_id, true)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

/// Decline a message request: the sender's messages are refused from now on.
#[utoipa::path(post, path = "/v1/conversations/{id}/decline", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id")),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "no_request", body = ErrorBody),
    ))]
async fn decline(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .answer_request(&actor.ctx, id, actor.user_id, false)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub user_id: Uuid,
}

/// A group admin adds a member.
#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id")),
    request_body = NewMember,
    responses(
        (status = 200, body = Version),
        (status = 403, description = "not a member or not an admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "blocked, direct_membership", body = ErrorBody),
    ))]
async fn add_member(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<NewMember>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .add_member(&actor.ctx, id, actor.user_id, body.user_id)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

/// A group admin removes a member; a member may remove themself (leave).
#[utoipa::path(delete, path = "/v1/conversations/{id}/members/{user_id}", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id"),
           ("user_id" = Uuid, Path, description = "the member")),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn remove_member(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, user)): Path<(Uuid, Uuid)>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .remove_member(&actor.ctx, id, actor.user_id, user)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessageBody {
    /// The client's ciphertext (opaque to the server), at most 32 KiB (of UTF-8).
    #[schema(schema_with = ciphertext)]
    pub ciphertext: String,
    #[schema(schema_with = id_text)]
    pub sender_device_id: String,
    #[schema(schema_with = id_text)]
    pub session_id: String,
    /// The same id again answers the first message.
    #[schema(schema_with = id_text)]
    pub client_message_id: String,
}

/// Opaque, not empty, without U+0000 (no store keeps it); longer than `MAX_CIPHERTEXT` bytes
/// is a 413.
fn ciphertext() -> Object {
    doc::pattern(1, MAX_CIPHERTEXT, r"^[^\u0000]*$").build()
}

/// Device, session and client message ids: 1–128 characters, no control characters.
fn id_text() -> Object {
    doc::text(1, MAX_ID, Text::Exact).build()
}

#[derive(Serialize, ToSchema)]
pub struct SentMessage {
    pub message_id: Uuid,
    pub seq: i64,
}

/// Send a message (members only).
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id")),
    request_body = NewMessageBody,
    responses(
        (status = 201, body = SentMessage),
        (status = 403, description = "not a member", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "blocked, request_declined", body = ErrorBody),
    ))]
async fn send(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<NewMessageBody>,
) -> Result<Answer<SentMessage>, AppError> {
    let sent = state
        .conversations
        .send(
            &actor.ctx,
            id,
            actor.user_id,
            Outgoing {
                ciphertext: body.ciphertext,
                sender_device_id: body.sender_device_id,
                session_id: body.session_id,
                client_message_id: body.client_message_id,
            },
        )
        .await?;
    Ok(Answer::created(
        Domain::Conversation,
        sent.done.position,
        SentMessage {
            message_id: sent.message_id,
            seq: sent.seq,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesParams {
    /// Messages after this seq (default 0).
    pub after_seq: Option<i64>,
    /// 1–100 (default 20).
    pub limit: Option<i64>,
}

impl IntoParams for MessagesParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            doc::query(
                "after_seq",
                false,
                "messages after this seq (default 0)",
                after_seq(),
            ),
            doc::query(
                "limit",
                false,
                "1–100 (default 20)",
                super::extract::page_limit(),
            ),
        ]
    }
}

fn after_seq() -> Object {
    doc::integer(0, i64::MAX).build()
}

/// A reaction's path: the conversation, the message and the emoji.
struct ReactionPath;

impl IntoParams for ReactionPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            doc::path("id", "conversation id", doc::uuid()),
            doc::path("mid", "message id", doc::uuid()),
            doc::path(
                "emoji",
                "the reaction: 1–16 characters, no control characters",
                emoji(),
            ),
        ]
    }
}

fn emoji() -> Object {
    doc::text(1, MAX_EMOJI, Text::Exact).build()
}

#[derive(Serialize, ToSchema)]
pub struct MessageItem {
    pub message_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub sender_device_id: String,
    pub session_id: String,
    /// `null` once recalled.
    pub ciphertext: Option<String>,
    pub client_message_id: String,
    #[schema(value_type = String)]
    pub sent_at: nova_infra::readmodel::Timestamp,
    #[schema(value_type = Option<String>)]
    pub edited_at: Option<nova_infra::readmodel::Timestamp>,
    pub recalled: bool,
    /// Replaced ciphertexts of edits, oldest first: `{ciphertext, session_id, since}`.
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<serde_json::Value>,
    /// emoji → the users who reacted with it.
    pub reactions: BTreeMap<String, Vec<Uuid>>,
}

/// A conversation's messages in ascending `seq` (members only).
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id"), MessagesParams,
        MinPosition<ConversationReads>),
    responses(
        (status = 200, body = PageBody<MessageItem>),
        (status = 403, description = "not a member", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn messages(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Query(q): Query<MessagesParams>,
    min: MinPosition<ConversationReads>,
) -> Result<Json<PageBody<MessageItem>>, AppError> {
    state.conversations.as_member(id, actor.user_id).await?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::invalid_field("limit", "limit must be 1–100"));
    }
    let after = q.after_seq.unwrap_or(0);
    if after < 0 {
        return Err(AppError::invalid_field(
            "after_seq",
            "after_seq must not be negative",
        ));
    }
    min.wait(&state).await?;
    let (rows, more) = view::messages(&state.db.any, id, after, limit).await?;
    let next_cursor = if more {
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|r| MessageItem {
            message_id: r.message_id,
            seq: r.seq,
            sender_id: r.sender_id,
            sender_device_id: r.sender_device_id,
            session_id: r.session_id,
            ciphertext: r.ciphertext,
            client_message_id: r.client_message_id,
            sent_at: r.sent_at,
            edited_at: r.edited_at,
            recalled: r.recalled.0,
            history: r.history.0,
            reactions: r.reactions,
        })
        .collect();
    Ok(Json(PageBody { items, next_cursor }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    #[schema(schema_with = ciphertext)]
    pub ciphertext: String,
    #[schema(schema_with = id_text)]
    pub session_id: String,
}

/// The sender replaces a message's ciphertext; the old one stays in its history.
#[utoipa::path(patch, path = "/v1/conversations/{id}/messages/{mid}", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id"),
           ("mid" = Uuid, Path, description = "message id")),
    request_body = EditBody,
    responses(
        (status = 200, body = Version),
        (status = 403, description = "not a member, not the sender", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "message_recalled", body = ErrorBody),
    ))]
async fn edit(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, mid)): Path<(Uuid, Uuid)>,
    Json(body): Json<EditBody>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .edit(
            &actor.ctx,
            id,
            actor.user_id,
            mid,
            body.session_id,
            body.ciphertext,
        )
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

/// The sender recalls a message: its ciphertext is no longer served.
#[utoipa::path(delete, path = "/v1/conversations/{id}/messages/{mid}", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id"),
           ("mid" = Uuid, Path, description = "message id")),
    responses(
        (status = 200, body = Version),
        (status = 403, description = "not a member, not the sender", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn recall(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, mid)): Path<(Uuid, Uuid)>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .recall(&actor.ctx, id, actor.user_id, mid)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

/// React to a message.
#[utoipa::path(put, path = "/v1/conversations/{id}/messages/{mid}/reactions/{emoji}",
    tag = "messaging",
    security(("bearer" = [])),
    params(ReactionPath),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn react(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, mid, emoji)): Path<(Uuid, Uuid, String)>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .react(&actor.ctx, id, actor.user_id, mid, &emoji, true)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

/// Take a reaction back.
#[utoipa::path(delete, path = "/v1/conversations/{id}/messages/{mid}/reactions/{emoji}",
    tag = "messaging",
    security(("bearer" = [])),
    params(ReactionPath),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn unreact(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, mid, emoji)): Path<(Uuid, Uuid, String)>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .react(&actor.ctx, id, actor.user_id, mid, &emoji, false)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    /// The last message read (≥ 0, at most the conversation's last `seq`).
    #[serde(deserialize_with = "super::extract::integer")]
    #[schema(schema_with = after_seq)]
    pub up_to_seq: i64,
}

/// A read receipt.
#[utoipa::path(post, path = "/v1/conversations/{id}/read", tag = "messaging",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "conversation id")),
    request_body = ReadBody,
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "beyond_last_message", body = ErrorBody),
    ))]
async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<ReadBody>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .conversations
        .mark_read(&actor.ctx, id, actor.user_id, body.up_to_seq)
        .await?;
    Ok(Answer::version(Domain::Conversation, done))
}

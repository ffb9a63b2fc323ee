//! Routes of the `post` area (API.md "Content"): posts, comments, likes, shares, bookmarks.
//! Handlers are thin: parse, build the command context, call the command service or a query,
//! map the result. Every route needs an access token. Commands that appended answer with
//! `X-Nova-Position: post:<n>`; reads honour `X-Nova-Min-Position`.

use axum::extract::State;
use nova_commands::post::{COLLECTION_MAX, COMMENT_MAX, CONTENT_MAX, MEDIA_MAX};
use nova_event_schemas::Domain;
use nova_projections::{post_view, user_directory};
use nova_queries::post::{self as posts, BookmarkRow, CollectionFilter, CommentRow, PostRow};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, Object, Schema, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{
    Actor, Answer, Json, ListFilter, MinPosition, OptionalJson, PageBody, PageParams, PageQuery,
    Path, Version,
};
use super::openapi::{self as doc, Text};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_post))
        .routes(routes!(get_post, edit_post, delete_post))
        .routes(routes!(author_posts))
        .routes(routes!(add_comment, list_comments))
        .routes(routes!(delete_comment))
        .routes(routes!(like, unlike))
        .routes(routes!(share))
        .routes(routes!(bookmark, unbookmark))
        .routes(routes!(list_bookmarks))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePostRequest {
    /// 1–5000 characters (not only whitespace). `@username` mentions are recognised.
    #[schema(schema_with = post_content)]
    content: String,
    /// Up to 4 http(s) URLs of at most 2048 characters.
    #[serde(default)]
    #[schema(schema_with = media_urls)]
    media_urls: Vec<String>,
}

fn post_content() -> Object {
    doc::text(1, CONTENT_MAX, Text::TrimmedMultiline).build()
}

fn media_urls() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .items(doc::url())
            .max_items(Some(MEDIA_MAX))
            .build(),
    )
}

/// Absent or `null`: unchanged.
fn edit_content() -> Object {
    doc::nullable(doc::text(1, CONTENT_MAX, Text::TrimmedMultiline)).build()
}

/// Absent or `null`: unchanged; `[]` removes all media.
fn edit_media_urls() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .items(doc::url())
            .max_items(Some(MEDIA_MAX))
            .build(),
    )
}

fn comment_content() -> Object {
    doc::text(1, COMMENT_MAX, Text::TrimmedMultiline).build()
}

fn collection() -> Object {
    doc::nullable(doc::text(1, COLLECTION_MAX, Text::Trimmed)).build()
}

#[derive(Serialize, ToSchema)]
pub struct PostCreated {
    post_id: Uuid,
}

/// A post with its counters.
#[derive(Serialize, ToSchema)]
pub struct PostBody {
    post_id: Uuid,
    author_id: Uuid,
    content: String,
    media_urls: Vec<String>,
    /// Users mentioned (active when the post was written or last edited).
    mentions: Vec<Uuid>,
    /// RFC 3339.
    created_at: String,
    edited_at: Option<String>,
    like_count: i64,
    comment_count: i64,
    share_count: i64,
}

impl From<PostRow> for PostBody {
    fn from(r: PostRow) -> Self {
        PostBody {
            post_id: r.post_id,
            author_id: r.author_id,
            content: r.content,
            media_urls: r.media_urls.0,
            mentions: r.mentions.0,
            created_at: r.created_at.to_string(),
            edited_at: r.edited_at.map(|t| t.to_string()),
            like_count: r.like_count,
            comment_count: r.comment_count,
            share_count: r.share_count,
        }
    }
}

crate::views!(
    /// Posts, comments and bookmarks.
    PostReads: (post_view::NAME, &[Domain::Post])
);

crate::views!(
    /// An author's posts: the posts, and the directory for whether the author is active.
    AuthorReads: (post_view::NAME, &[Domain::Post]), (user_directory::NAME, &[Domain::User])
);

/// Create a post.
#[utoipa::path(post, path = "/v1/posts", tag = "content", security(("bearer" = [])),
    request_body = CreatePostRequest,
    responses(
        (status = 201, body = PostCreated),
    ))]
async fn create_post(
    State(state): State<AppState>,
    actor: Actor,
    Json(req): Json<CreatePostRequest>,
) -> Result<Answer<PostCreated>, AppError> {
    let (post_id, done) = state
        .posts
        .create(&actor.ctx, actor.user_id, req.content, req.media_urls)
        .await?;
    Ok(Answer::created(
        Domain::Post,
        done.position,
        PostCreated { post_id },
    ))
}

/// A post with its like, comment and share counts. Deleted and hidden posts are not found.
#[utoipa::path(get, path = "/v1/posts/{id}", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id"),
           MinPosition<PostReads>),
    responses(
        (status = 200, body = PostBody),
        (status = 404, body = ErrorBody),
    ))]
async fn get_post(
    State(state): State<AppState>,
    _actor: Actor,
    Path(id): Path<Uuid>,
    min: MinPosition<PostReads>,
) -> Result<Json<PostBody>, AppError> {
    min.wait(&state).await?;
    posts::visible_post(&state.db.any, id)
        .await?
        .map(|p| Json(p.into()))
        .ok_or_else(|| AppError::not_found("post"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditPostRequest {
    /// Absent or `null`: unchanged.
    #[schema(schema_with = edit_content)]
    content: Option<String>,
    /// Absent or `null`: unchanged; `[]` removes all media.
    #[schema(schema_with = edit_media_urls)]
    media_urls: Option<Vec<String>>,
}

/// Edit a post (author only). The previous versions stay in the post's event stream.
#[utoipa::path(patch, path = "/v1/posts/{id}", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    request_body = EditPostRequest,
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "post_deleted", body = ErrorBody),
    ))]
async fn edit_post(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(req): Json<EditPostRequest>,
) -> Result<Answer<Version>, AppError> {
    let (_, done) = state
        .posts
        .edit(&actor.ctx, actor.user_id, id, req.content, req.media_urls)
        .await?;
    Ok(Answer::version(Domain::Post, done))
}

/// Delete a post (author only; soft delete; deleting again changes nothing).
#[utoipa::path(delete, path = "/v1/posts/{id}", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn delete_post(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.posts.delete(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Post, done))
}

/// An author's visible posts, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/posts", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "author's user id"), PageParams,
           MinPosition<AuthorReads>),
    responses(
        (status = 200, body = PageBody<PostBody>),
        (status = 404, description = "no such (active) user", body = ErrorBody),
    ))]
async fn author_posts(
    State(state): State<AppState>,
    _actor: Actor,
    Path(id): Path<Uuid>,
    PageQuery(page, _): PageQuery,
    min: MinPosition<AuthorReads>,
) -> Result<Json<PageBody<PostBody>>, AppError> {
    min.wait(&state).await?;
    // An unknown or deactivated author has no public posts (as `GET /v1/users/{id}` has no
    // profile): 404, not an empty page.
    if !nova_queries::user::is_active(&state.db.any, id).await? {
        return Err(AppError::not_found("user"));
    }
    let page = posts::posts_by_author(&state.db.any, id, &page).await?;
    Ok(Json(page.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    /// 1–2000 characters. `@username` mentions are recognised.
    #[schema(schema_with = comment_content)]
    content: String,
}

#[derive(Serialize, ToSchema)]
pub struct CommentCreated {
    comment_id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct CommentBody {
    comment_id: Uuid,
    post_id: Uuid,
    author_id: Uuid,
    content: String,
    mentions: Vec<Uuid>,
    created_at: String,
}

impl From<CommentRow> for CommentBody {
    fn from(c: CommentRow) -> Self {
        CommentBody {
            comment_id: c.comment_id,
            post_id: c.post_id,
            author_id: c.author_id,
            content: c.content,
            mentions: c.mentions.0,
            created_at: c.created_at.to_string(),
        }
    }
}

/// Comment on a post. Not on a deleted or hidden post (422 `post_deleted`).
#[utoipa::path(post, path = "/v1/posts/{id}/comments", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    request_body = CommentRequest,
    responses(
        (status = 201, body = CommentCreated),
        (status = 404, body = ErrorBody),
        (status = 422, description = "post_deleted", body = ErrorBody),
    ))]
async fn add_comment(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(req): Json<CommentRequest>,
) -> Result<Answer<CommentCreated>, AppError> {
    let (comment_id, done) = state
        .posts
        .add_comment(&actor.ctx, actor.user_id, id, req.content)
        .await?;
    Ok(Answer::created(
        Domain::Post,
        done.position,
        CommentCreated { comment_id },
    ))
}

/// A visible post's comments, oldest first.
#[utoipa::path(get, path = "/v1/posts/{id}/comments", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id"), PageParams,
           MinPosition<PostReads>),
    responses(
        (status = 200, body = PageBody<CommentBody>),
        (status = 404, body = ErrorBody),
    ))]
async fn list_comments(
    State(state): State<AppState>,
    _actor: Actor,
    Path(id): Path<Uuid>,
    PageQuery(page, _): PageQuery,
    min: MinPosition<PostReads>,
) -> Result<Json<PageBody<CommentBody>>, AppError> {
    min.wait(&state).await?;
    if posts::visible_post(&state.db.any, id).await?.is_none() {
        return Err(AppError::not_found("post"));
    }
    let page = posts::comments(&state.db.any, id, &page).await?;
    Ok(Json(page.into()))
}

/// Delete a comment (its author or the post's author; deleting again changes nothing).
#[utoipa::path(delete, path = "/v1/posts/{id}/comments/{comment_id}", tag = "content",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id"),
           ("comment_id" = Uuid, Path, description = "comment id")),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn delete_comment(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, comment_id)): Path<(Uuid, Uuid)>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .posts
        .delete_comment(&actor.ctx, actor.user_id, id, comment_id)
        .await?;
    Ok(Answer::version(Domain::Post, done))
}

/// Like a post (liking twice is one like).
#[utoipa::path(put, path = "/v1/posts/{id}/like", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    responses(
        (status = 200, body = Version),
        (status = 404, body = ErrorBody),
        (status = 422, description = "post_deleted", body = ErrorBody),
    ))]
async fn like(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.posts.like(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Post, done))
}

/// Take a like back (unliking twice changes nothing).
#[utoipa::path(delete, path = "/v1/posts/{id}/like", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    responses(
        (status = 200, body = Version),
        (status = 404, body = ErrorBody),
    ))]
async fn unlike(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.posts.unlike(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Post, done))
}

#[derive(Serialize, ToSchema)]
pub struct ShareCreated {
    share_id: Uuid,
}

/// Share (repost) a post.
#[utoipa::path(post, path = "/v1/posts/{id}/shares", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    responses(
        (status = 201, body = ShareCreated),
        (status = 404, body = ErrorBody),
        (status = 422, description = "post_deleted", body = ErrorBody),
    ))]
async fn share(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<ShareCreated>, AppError> {
    let (share_id, done) = state.posts.share(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::created(
        Domain::Post,
        done.position,
        ShareCreated { share_id },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookmarkRequest {
    /// 1–64 characters; absent or `null`: the default list.
    #[schema(schema_with = collection)]
    collection: Option<String>,
}

/// Bookmark a post, optionally into a named collection (bookmarking into another collection
/// moves it).
#[utoipa::path(put, path = "/v1/posts/{id}/bookmark", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    request_body(content = Option<BookmarkRequest>, description = "optional"),
    responses(
        (status = 200, body = Version),
        (status = 404, body = ErrorBody),
        (status = 422, description = "post_deleted", body = ErrorBody),
    ))]
async fn bookmark(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    OptionalJson(body): OptionalJson<BookmarkRequest>,
) -> Result<Answer<Version>, AppError> {
    let collection = body.and_then(|b| b.collection);
    let done = state
        .posts
        .bookmark(&actor.ctx, actor.user_id, id, collection)
        .await?;
    Ok(Answer::version(Domain::Post, done))
}

/// Remove a bookmark (removing twice changes nothing).
#[utoipa::path(delete, path = "/v1/posts/{id}/bookmark", tag = "content", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "post id")),
    responses(
        (status = 200, body = Version),
        (status = 404, body = ErrorBody),
    ))]
async fn unbookmark(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .posts
        .unbookmark(&actor.ctx, actor.user_id, id)
        .await?;
    Ok(Answer::version(Domain::Post, done))
}

#[derive(Deserialize)]
pub struct BookmarkParams {
    /// Absent: every bookmark; blank: the default list only; a name: that collection.
    collection: Option<String>,
}

impl IntoParams for BookmarkParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![doc::query(
            "collection",
            false,
            "absent: every bookmark; blank: the default list only; a name (as a bookmark's \
             `collection`): that collection",
            doc::text(0, COLLECTION_MAX, Text::TrimmedOrBlank),
        )]
    }
}

impl ListFilter for BookmarkParams {
    const KEYS: &'static [&'static str] = &["collection"];
}

#[derive(Serialize, ToSchema)]
pub struct BookmarkBody {
    post_id: Uuid,
    collection: Option<String>,
    bookmarked_at: String,
    post: PostBody,
}

impl From<BookmarkRow> for BookmarkBody {
    fn from(b: BookmarkRow) -> Self {
        BookmarkBody {
            post_id: b.post.post_id,
            collection: b.collection,
            bookmarked_at: b.bookmarked_at.to_string(),
            post: b.post.into(),
        }
    }
}

/// The caller's bookmarks of visible posts, newest first.
#[utoipa::path(get, path = "/v1/bookmarks", tag = "content", security(("bearer" = [])),
    params(BookmarkParams, PageParams,
           MinPosition<PostReads>),
    responses(
        (status = 200, body = PageBody<BookmarkBody>),
    ))]
async fn list_bookmarks(
    State(state): State<AppState>,
    actor: Actor,
    PageQuery(page, q): PageQuery<BookmarkParams>,
    min: MinPosition<PostReads>,
) -> Result<Json<PageBody<BookmarkBody>>, AppError> {
    // A name is checked as a bookmark's is (a name no bookmark can have, e.g. with control
    // characters, is a 400 — and never reaches the database, which may refuse it).
    let filter = match q.collection {
        None => CollectionFilter::All,
        Some(c) if c.trim().is_empty() && c.chars().count() <= COLLECTION_MAX => {
            CollectionFilter::Default
        }
        Some(c) => CollectionFilter::Named(nova_commands::post::validate_collection(c)?),
    };
    min.wait(&state).await?;
    let page = posts::bookmarks(&state.db.any, actor.user_id, &filter, &page).await?;
    Ok(Json(page.into()))
}

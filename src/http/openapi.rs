//! The OpenAPI document's shared declarations (ADR 0026). The document must say exactly what the
//! server accepts and answers, so what validates is what is declared:
//!
//! - **Field schemas** are built here from the validators' own constants (`USERNAME_MAX`,
//!   `CONTENT_MAX`, `FORMAT_CHARS`, `URL_PATTERN`, …) and attached with
//!   `#[schema(schema_with = …)]`, or to parameters in hand-written `IntoParams` impls with
//!   [`query`]/[`path`] (`#[param(schema_with)]` drops `required` and the description): a limit
//!   changed in the command layer changes the document.
//! - **Edge answers** — the statuses the extractors and layers give every route (400 for a bad
//!   parameter or body, 401 without a valid token, 413/415 for bodies, 429 from the rate limit
//!   and the wait bound, 503 when a dependency is down) — are added to every operation by
//!   [`EdgeResponses`], from what the operation declares (parameters, a JSON body, security),
//!   instead of being repeated (and forgotten) per route, and `Idempotency-Key` on every stored
//!   command. Routes list only their own answers (403/404/409/422 and their success).
//! - **Server-issued values** (list cursors, `X-Nova-Min-Position`) carry a `format` naming
//!   what they are; only values the server handed out are accepted.

use nova_commands::user::{FORMAT_CHARS, URL_MAX, URL_PATTERN};
use nova_event_schemas::Domain;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder, Schema};
use utoipa::Modify;

use super::idempotency::{MAX_KEY_LEN, NOT_STORED};

/// What `char::is_control` matches (Unicode general category Cc), as the body of a regex
/// character class: written with `\uXXXX` escapes, which ECMA-262, Python and Rust regexes all
/// read alike.
pub const CONTROL_CLASS: &str = r"\u0000-\u001F\u007F-\u009F";

/// [`CONTROL_CLASS`] without line feed, carriage return and tab.
pub const CONTROL_BUT_BREAKS_CLASS: &str = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F";

/// [`CONTROL_CLASS`] without line feed and tab (a stream description).
pub const CONTROL_BUT_LF_TAB_CLASS: &str = r"\u0000-\u0008\u000B-\u001F\u007F-\u009F";

/// The class body of [`FORMAT_CHARS`] (invisible formatting characters): `\uXXXX` escapes in
/// the basic plane, the characters themselves beyond it (ECMA-262 without the `u` flag has no
/// escape for them; a literal character reads the same everywhere).
pub fn format_class() -> String {
    let one = |c: char| {
        if (c as u32) <= 0xFFFF {
            format!("\\u{:04X}", c as u32)
        } else {
            c.to_string()
        }
    };
    FORMAT_CHARS
        .iter()
        .map(|&(a, b)| {
            if a == b {
                one(a)
            } else {
                format!("{}-{}", one(a), one(b))
            }
        })
        .collect()
}

/// How a text field treats white space and control characters.
#[derive(Clone, Copy)]
pub enum Text {
    /// Taken as sent; no control characters.
    Exact,
    /// Taken as sent; no control characters, not only white space.
    Printable,
    /// Trimmed by the server, then 1..=max and not only white space; no control characters.
    Trimmed,
    /// As [`Text::Trimmed`], with line breaks (`\n`, `\r`) and tabs allowed.
    TrimmedMultiline,
    /// As [`Text::Trimmed`], with line feeds and tabs allowed.
    TrimmedLfTab,
    /// Trimmed, may be blank; no control characters.
    TrimmedOrBlank,
    /// Optional profile text: trimmed, may be empty (= cleared); neither control nor invisible
    /// formatting characters.
    Profile,
}

/// What `str::trim` strips (`char::is_whitespace`, Unicode White_Space), as a class body.
pub const WHITE_SPACE_CLASS: &str =
    r"\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// A string schema: at most `max` characters (code points, as `chars().count()` counts them;
/// `min` for [`Text::Exact`]) and the pattern of `kind`. For trimmed kinds the pattern admits
/// white space around the text (the server strips it) and the text itself must fit the class.
pub fn text(min: usize, max: usize, kind: Text) -> ObjectBuilder {
    let ws = WHITE_SPACE_CLASS;
    // Trimmed, then at least one character, none of `class` inside.
    let not_blank =
        |class: &str| format!("^[{ws}]*[^{class}{ws}](?:[^{class}]*[^{class}{ws}])?[{ws}]*$");
    let (pattern, min) = match kind {
        Text::Exact => (format!("^[^{CONTROL_CLASS}]*$"), min),
        Text::Printable => (
            format!("^[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{ws}][^{CONTROL_CLASS}]*$"),
            1,
        ),
        Text::Trimmed => (not_blank(CONTROL_CLASS), 1),
        Text::TrimmedMultiline => (not_blank(CONTROL_BUT_BREAKS_CLASS), 1),
        Text::TrimmedLfTab => (not_blank(CONTROL_BUT_LF_TAB_CLASS), 1),
        Text::TrimmedOrBlank => (
            format!("^[{ws}]*(?:[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{ws}])?[{ws}]*$"),
            0,
        ),
        Text::Profile => {
            let class = format!("{CONTROL_CLASS}{}", format_class());
            // May be only white space (= cleared).
            (format!("^[{ws}]*(?:[^{class}]*[^{class}{ws}])?[{ws}]*$"), 0)
        }
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
}

/// `schema` that also accepts `null`.
pub fn nullable(schema: ObjectBuilder) -> ObjectBuilder {
    schema.schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// A string of `min..=max` characters.
pub fn string(min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
}

/// A string of `min..=max` characters matching `pattern` (anchored by the caller).
pub fn pattern(min: usize, max: usize, pattern: &str) -> ObjectBuilder {
    string(min, max).pattern(Some(pattern))
}

/// An http(s) URL as the URL validators accept it (`nova_commands::user::URL_PATTERN`, at
/// most `URL_MAX` characters), with the white space around it that the server trims.
pub fn url() -> ObjectBuilder {
    let ws = WHITE_SPACE_CLASS;
    pattern(1, URL_MAX, &format!("^[{ws}]*(?:{})[{ws}]*$", url_body()))
}

/// A profile picture URL: a URL as [`url`], or only white space (= cleared).
pub fn url_or_blank() -> ObjectBuilder {
    let ws = WHITE_SPACE_CLASS;
    pattern(0, URL_MAX, &format!("^[{ws}]*(?:{})?[{ws}]*$", url_body()))
}

fn url_body() -> &'static str {
    URL_PATTERN.trim_start_matches('^').trim_end_matches('$')
}

/// An integer `min..=max`.
pub fn integer(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
}

/// A list cursor: opaque text the server handed out as `next_cursor`; anything else is a 400.
/// Only its `format` names it (no pattern or length): no pattern can tell a cursor the server
/// wrote from another hex string, and the format lets a client (or a fuzzer) generate
/// well-formed ones.
pub fn cursor(format: &'static str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom(format.to_owned())))
        .description(Some(format!(
            "`next_cursor` of the previous page of the same list (at most {} characters); any \
             other value is a 400",
            nova_queries::cursor::MAX_CURSOR
        )))
}

/// One of `domains` by name.
pub fn domain(domains: &[Domain]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(domains.iter().map(|d| d.as_str())))
}

/// An RFC 3339 instant.
pub fn instant() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}

/// The `X-Nova-Min-Position` value for a read answered from `domains`: `<domain>:<position>`
/// with a position the server has written (the `X-Nova-Position` of a command's answer).
pub fn min_position(domains: &[Domain]) -> ObjectBuilder {
    let names: Vec<&str> = domains.iter().map(|d| d.as_str()).collect();
    pattern(3, 64, &format!("^(?:{}):[0-9]{{1,18}}$", names.join("|")))
        .format(Some(SchemaFormat::Custom("nova-position".to_owned())))
}

/// A parameter whose schema is built here (`#[param(schema_with = …)]` would drop its
/// `required` and description, so such parameters are declared with this in a hand-written
/// `IntoParams`).
pub fn param(
    location: ParameterIn,
    name: &str,
    required: bool,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A path parameter (always required).
pub fn path(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    param(ParameterIn::Path, name, true, description, schema)
}

/// A query parameter.
pub fn query(
    name: &str,
    required: bool,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> Parameter {
    param(ParameterIn::Query, name, required, description, schema)
}

/// A UUID.
pub fn uuid() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

fn error_body() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name("ErrorBody"))
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(error_body())).build(),
    )
}

fn retry_after(response: ResponseBuilder) -> ResponseBuilder {
    response.header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .description(Some("seconds after which a retry may succeed"))
            .build(),
    )
}

/// Adds the answers the HTTP edge gives to every operation that can reach it (see the module
/// comment); an answer a route documents itself is kept.
pub struct EdgeResponses;

impl Modify for EdgeResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let limited = path.starts_with("/v1/");
            let stored = limited && !NOT_STORED.contains(&path.as_str());
            edge_responses_of(&mut item.get, limited, false);
            for command in [
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ] {
                edge_responses_of(command, limited, stored);
            }
        }
    }
}

fn edge_responses_of(op: &mut Option<Operation>, limited: bool, idempotent: bool) {
    if let Some(op) = op {
        edge_responses(op, limited, idempotent);
    }
}

/// The header of a retried command (API.md "Conventions", ADR 0012).
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

fn edge_responses(op: &mut Operation, limited: bool, idempotent: bool) {
    if idempotent {
        op.parameters.get_or_insert_with(Vec::new).push(param(
            ParameterIn::Header,
            IDEMPOTENCY_KEY,
            false,
            "a retried request with the same key and body answers the first answer and \
             changes nothing (1–255 visible ASCII characters)",
            pattern(1, MAX_KEY_LEN, "^[!-~]*$"),
        ));
    }
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_params = !params.is_empty();
    let waits = params
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Header && p.name == "X-Nova-Min-Position");
    let body = op.request_body.as_ref();
    let json_body = body.is_some_and(|b| {
        matches!(b.required, Some(utoipa::openapi::Required::True))
            && b.content.contains_key("application/json")
    });
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut add = |status: &str, response: ResponseBuilder| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(response.build()));
    };
    if has_params || body.is_some() {
        add(
            "400",
            error(
                "malformed request: `invalid_json`, `invalid_body`, `invalid_field` (details name \
                 the field), `invalid_path`, `invalid_query` or `invalid_header`",
            ),
        );
    }
    if secured {
        add(
            "401",
            error("`unauthorized` (no token) or `invalid_token` (invalid, expired or revoked)"),
        );
    }
    if body.is_some() {
        add(
            "413",
            error("`payload_too_large`: the body is over the limit"),
        );
    }
    if json_body {
        add(
            "415",
            error("`unsupported_media_type`: the body must be sent as `application/json`"),
        );
    }
    if limited || waits {
        add(
            "429",
            retry_after(error(
                "`rate_limited` (the caller's quota is spent; `RateLimit` headers), or \
                 `too_many_waits` (too many reads of this client wait for a projection)",
            )),
        );
    }
    if idempotent {
        add(
            "409",
            error("`idempotency_in_progress`: a request with this `Idempotency-Key` is running"),
        );
        add(
            "422",
            error("`idempotency_key_reused`: this `Idempotency-Key` came with another request"),
        );
    }
    if limited {
        add(
            "503",
            retry_after(error(
                "a dependency is unavailable, the server is busy, or a projection has not \
                 reached `X-Nova-Min-Position` in time",
            )),
        );
    }
}

/// The `Object` of `builder`, for `schema_with` functions.
pub fn build(builder: ObjectBuilder) -> Object {
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::{MinPosition, Views};
    use utoipa::IntoParams;

    fn regex(p: &str) -> regex::Regex {
        regex::Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn patterns(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(p)) = m.get("pattern") {
                    out.push(p.clone());
                }
                m.values().for_each(|v| patterns(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| patterns(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_pattern_of_the_document_compiles() {
        let doc = serde_json::to_value(crate::http::openapi()).unwrap();
        let mut found = Vec::new();
        patterns(&doc, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for p in found {
            regex(&p);
        }
    }

    fn pattern_of(schema: ObjectBuilder) -> regex::Regex {
        let v = serde_json::to_value(schema.build()).unwrap();
        regex(v["pattern"].as_str().unwrap())
    }

    #[test]
    fn the_url_pattern_is_what_the_validator_accepts() {
        let published = pattern_of(url());
        for (u, ok) in [
            ("https://example.com/a.png", true),
            ("http://a.io/1?x=2#y", true),
            ("http://cdn-1.example.com:8080/p", true),
            ("  https://example.com/a  ", true),
            ("https://user:secret@img.example/p.png", false),
            ("http://1.2.3.4/", false),
            ("ftp://example.com/", false),
            ("http://", false),
            ("http://-a.com/", false),
            ("http://a.com:99999/", false),
            ("http://a.com/ü", false),
        ] {
            assert_eq!(published.is_match(u), ok, "pattern, {u}");
            assert_eq!(
                nova_commands::user::valid_url(u.trim()),
                ok,
                "validator, {u}"
            );
        }
    }

    #[test]
    fn text_patterns_admit_the_white_space_the_server_trims() {
        let trimmed = pattern_of(text(1, 10, Text::Trimmed));
        assert!(trimmed.is_match("\t hello \n"));
        assert!(!trimmed.is_match(" \t "));
        assert!(!trimmed.is_match("a\u{7}b"));
        let multiline = pattern_of(text(1, 10, Text::TrimmedMultiline));
        assert!(multiline.is_match("a\nb\r\nc\td"));
        assert!(!multiline.is_match("a\u{0}b"));
        let profile = pattern_of(text(0, 10, Text::Profile));
        assert!(profile.is_match(""));
        assert!(profile.is_match(" \u{85} "));
        assert!(profile.is_match("Zoë 🌱"));
        assert!(!profile.is_match("a\u{200B}b"));
        assert!(!profile.is_match("a\u{E0041}b"));
        assert!(nova_commands::user::is_format_char('\u{E0041}'));
    }

    crate::views!(TestReads: ("post_view", &[Domain::Post]), ("user_directory", &[Domain::User]));

    #[test]
    fn the_min_position_parameter_lists_the_views_domains() {
        assert_eq!(TestReads::domains(), vec![Domain::Post, Domain::User]);
        let params = MinPosition::<TestReads>::into_params(|| None);
        let v = serde_json::to_value(&params[0]).unwrap();
        assert_eq!(v["name"], "X-Nova-Min-Position");
        let p = regex(v["schema"]["pattern"].as_str().unwrap());
        assert!(p.is_match("post:0") && p.is_match("user:123456789012345678"));
        assert!(!p.is_match("follow:1") && !p.is_match("post: 1") && !p.is_match("post:+1"));
    }
}

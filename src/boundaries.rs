//! `nova boundaries`: the ownership matrix, generated from the code and the migrations, and the
//! checks that keep it honest (DESIGN rules 1 and 2; ADR 0010).
//!
//! [`collect`] reads everything once into a [`Model`]: the domains with their events tables,
//! aggregate types and event types; the projections with the tables they claim and the domains
//! they read; the policies with what they consume and issue; the HTTP routes of the OpenAPI
//! document; the embedded migrations of both engines; the embedded JSON Schema files.
//! [`check`] is a pure function of a `Model`, so tests plant violations in a small fixture.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use nova_event_schemas::{Domain, DomainEvent};
use serde::{Serialize, Serializer};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/schema_files.rs"));
}

/// Who may write a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// A domain: its events table only.
    Domain(Domain),
    /// A projection (read model), by name: the tables its `tables()` lists.
    Projection(String),
    /// Platform infrastructure (idempotency, projector runtime, relay), by component.
    Platform(String),
}

impl Owner {
    pub fn kind(&self) -> &'static str {
        match self {
            Owner::Domain(_) => "domain",
            Owner::Projection(_) => "projection",
            Owner::Platform(_) => "platform",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Owner::Domain(d) => d.as_str(),
            Owner::Projection(n) | Owner::Platform(n) => n,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            kind: &'static str,
            name: &'a str,
        }
        Json {
            kind: self.kind(),
            name: self.name(),
        }
        .serialize(s)
    }
}

/// Platform tables and the component that owns each. A platform migration may create only these.
pub const PLATFORM_TABLES: &[(&str, &str)] = &[
    ("idempotency_keys", "idempotency"),
    ("command_keys", "command_keys"),
    ("projection_checkpoints", "projector"),
    ("projection_as_of", "projector"),
    ("relay_checkpoints", "relay"),
    ("rebuild_leases", "rebuild_leases"),
    ("dead_letters", "dead_letters"),
];

/// Tables a domain owns besides its events table (written only by its command module).
pub const DOMAIN_TABLES: &[(&str, Domain)] = &[
    ("user_credentials", Domain::User),
    // Data keys sealing personal data in events (ADR 0025).
    ("user_data_keys", Domain::User),
    // The stream domain's keys (hashes) and viewer presence (ADR 0017).
    ("stream_keys", Domain::Stream),
    ("stream_presence", Domain::Stream),
    ("stream_audience", Domain::Stream),
    // The key server and the to-device queue (ADR 0020).
    ("conversation_devices", Domain::Conversation),
    ("conversation_one_time_keys", Domain::Conversation),
    ("conversation_fallback_keys", Domain::Conversation),
    ("conversation_to_device", Domain::Conversation),
];

/// Platform migrations named before the `platform_` prefix was the rule: (file stem, component).
pub const PLATFORM_MIGRATIONS: &[(&str, &str)] = &[
    ("projections_checkpoints", "projector"),
    ("relay_checkpoints", "relay"),
];

/// Owner of the routes of each OpenAPI tag: commands (any method but GET) belong to a domain,
/// reads (GET) to the view (projection) they read. Every route's tag must be listed here.
pub const ROUTE_TAGS: &[RouteTag] = &[
    RouteTag::new(
        "identity",
        OwnerRef::Domain(Domain::User),
        OwnerRef::View("user_directory"),
    ),
    RouteTag::new(
        "social_graph",
        OwnerRef::Domain(Domain::Follow),
        OwnerRef::View("follow_graph"),
    ),
    RouteTag::new(
        "content",
        OwnerRef::Domain(Domain::Post),
        OwnerRef::View("post_view"),
    ),
    RouteTag::new("feed", OwnerRef::View("feed"), OwnerRef::View("feed")),
    RouteTag::new("search", OwnerRef::View("search"), OwnerRef::View("search")),
    // Marking notifications read and changing preferences are user-domain commands.
    RouteTag::new(
        "notifications",
        OwnerRef::Domain(Domain::User),
        OwnerRef::View("notification"),
    ),
    RouteTag::new(
        "experiments",
        OwnerRef::Domain(Domain::Experiment),
        OwnerRef::View("experiment_results"),
    ),
    RouteTag::new(
        "streams",
        OwnerRef::Domain(Domain::Stream),
        OwnerRef::View("stream_view"),
    ),
    RouteTag::new(
        "messaging",
        OwnerRef::Domain(Domain::Conversation),
        OwnerRef::View("conversation_view"),
    ),
    // The key server's tables are the conversation domain's own (ADR 0020), read and written
    // by its command module.
    RouteTag::new(
        "keys",
        OwnerRef::Domain(Domain::Conversation),
        OwnerRef::Domain(Domain::Conversation),
    ),
    RouteTag::new(
        "ops",
        OwnerRef::Platform("projector"),
        OwnerRef::Platform("projector"),
    ),
    // The event history is read from the store (no view); erasure is a user-domain command.
    RouteTag::new(
        "analysts",
        OwnerRef::Domain(Domain::User),
        OwnerRef::Platform("export"),
    ),
    RouteTag::new(
        "system",
        OwnerRef::Platform("http"),
        OwnerRef::Platform("http"),
    ),
];

/// A `const`-friendly [`Owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRef {
    Domain(Domain),
    View(&'static str),
    Platform(&'static str),
}

impl OwnerRef {
    pub fn owner(self) -> Owner {
        match self {
            OwnerRef::Domain(d) => Owner::Domain(d),
            OwnerRef::View(n) => Owner::Projection(n.to_owned()),
            OwnerRef::Platform(n) => Owner::Platform(n.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTag {
    pub tag: &'static str,
    /// Owner of the tag's commands (every method but GET).
    pub commands: OwnerRef,
    /// Owner of the tag's reads (GET).
    pub reads: OwnerRef,
}

impl RouteTag {
    pub const fn new(tag: &'static str, commands: OwnerRef, reads: OwnerRef) -> Self {
        RouteTag {
            tag,
            commands,
            reads,
        }
    }
}

/// A domain as the code declares it.
#[derive(Debug, Clone)]
pub struct DomainInfo {
    pub domain: Domain,
    pub events_table: String,
    pub aggregate_types: Vec<String>,
    /// (event type, current schema version).
    pub event_types: Vec<(String, i32)>,
}

#[derive(Debug, Clone)]
pub struct ProjectionInfo {
    pub name: String,
    pub reads: Vec<Domain>,
    pub tables: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub name: String,
    pub domain: Domain,
    pub reads: Vec<Domain>,
    pub consumes: Vec<String>,
    pub issues: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// Upper case (`GET`, `POST`, …).
    pub method: String,
    pub path: String,
    pub tags: Vec<String>,
}

/// One migration file as embedded in the binary.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    /// `postgres` or `sqlite`.
    pub engine: String,
    /// `0001_user_events.sql`.
    pub file: String,
    pub sql: String,
}

/// Everything the checks look at, collected from the code by [`collect`].
#[derive(Debug, Clone)]
pub struct Model {
    pub domains: Vec<DomainInfo>,
    pub projections: Vec<ProjectionInfo>,
    pub policies: Vec<PolicyInfo>,
    pub routes: Vec<RouteInfo>,
    pub route_tags: Vec<RouteTag>,
    /// (table, platform component).
    pub platform_tables: Vec<(String, String)>,
    /// Tables a domain owns besides its events table (e.g. the user domain's credentials).
    pub domain_tables: Vec<(String, Domain)>,
    /// (file stem, platform component) of platform migrations without the `platform_` prefix.
    pub platform_migrations: Vec<(String, String)>,
    pub migrations: Vec<MigrationFile>,
    /// (`<domain>/<type>.v<N>.json`, contents).
    pub schema_files: Vec<(String, String)>,
}

/// Aggregate types of a domain (each domain module of `aggregates` lists its own).
pub(crate) fn aggregate_types(domain: Domain) -> &'static [&'static str] {
    match domain {
        Domain::User => nova_aggregates::user::AGGREGATE_TYPES,
        Domain::Follow => nova_aggregates::follow::AGGREGATE_TYPES,
        Domain::Post => nova_aggregates::post::AGGREGATE_TYPES,
        Domain::Experiment => nova_aggregates::experiment::AGGREGATE_TYPES,
        Domain::Stream => nova_aggregates::stream::AGGREGATE_TYPES,
        Domain::Conversation => nova_aggregates::conversation::AGGREGATE_TYPES,
    }
}

/// Event types of a domain, from its `domain_events!` enum.
fn event_types(domain: Domain) -> &'static [(&'static str, i32)] {
    match domain {
        Domain::User => nova_event_schemas::user::UserEvent::TYPES,
        Domain::Follow => nova_event_schemas::follow::FollowEvent::TYPES,
        Domain::Post => nova_event_schemas::post::PostEvent::TYPES,
        Domain::Experiment => nova_event_schemas::experiment::ExperimentEvent::TYPES,
        Domain::Stream => nova_event_schemas::stream::StreamEvent::TYPES,
        Domain::Conversation => nova_event_schemas::conversation::ConversationEvent::TYPES,
    }
}

/// The policies the application runs, built without a database: their pools connect lazily
/// and are never used here (only names, domains, `consumes()` and `issues()` are read). The
/// event store starts its appender tasks, so this runs inside a tokio runtime (its own, if the
/// caller has none).
fn policies() -> Result<Vec<Arc<dyn nova_policies::Policy>>, crate::app::BoxError> {
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(_) => None,
        Err(_) => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        ),
    };
    let _entered = runtime.as_ref().map(|r| r.enter());
    sqlx::any::install_default_drivers();
    let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy("sqlite::memory:")?;
    let any = sqlx::any::AnyPoolOptions::new()
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy("sqlite::memory:")?;
    let store = nova_infra::store::EventStore::new(Arc::new(
        nova_infra::store::sqlite::SqliteBackend::new(sqlite),
    ));
    Ok(crate::app::policies_with(
        store,
        any,
        nova_infra::db::Engine::Sqlite,
    ))
}

/// Routes of the generated OpenAPI document.
fn routes() -> Result<Vec<RouteInfo>, serde_json::Error> {
    let doc = serde_json::to_value(crate::http::openapi())?;
    let mut routes = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                if let Some(op) = item.get(method) {
                    let tags = op
                        .get("tags")
                        .and_then(|t| t.as_array())
                        .map(|t| {
                            t.iter()
                                .filter_map(|t| t.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    routes.push(RouteInfo {
                        method: method.to_uppercase(),
                        path: path.clone(),
                        tags,
                    });
                }
            }
        }
    }
    Ok(routes)
}

/// Collects the model from the code: nothing is read from disk or a database.
pub fn collect() -> Result<Model, crate::app::BoxError> {
    let domains = Domain::ALL
        .into_iter()
        .map(|d| DomainInfo {
            domain: d,
            events_table: d.events_table().to_owned(),
            aggregate_types: aggregate_types(d).iter().map(|s| s.to_string()).collect(),
            event_types: event_types(d)
                .iter()
                .map(|&(t, v)| (t.to_owned(), v))
                .collect(),
        })
        .collect();
    let projections = nova_projections::all()
        .iter()
        .map(|p| ProjectionInfo {
            name: p.name().to_owned(),
            reads: p.domains().to_vec(),
            tables: p.tables(),
        })
        .collect();
    let policies = policies()?
        .iter()
        .map(|p| PolicyInfo {
            name: p.name().to_owned(),
            domain: p.domain(),
            reads: p.domains().to_vec(),
            consumes: p.consumes().iter().map(|s| s.to_string()).collect(),
            issues: p.issues().iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    let mut migrations = Vec::new();
    for (engine, migrator) in [
        ("postgres", &nova_infra::db::POSTGRES_MIGRATOR),
        ("sqlite", &nova_infra::db::SQLITE_MIGRATOR),
    ] {
        for m in migrator.iter() {
            migrations.push(MigrationFile {
                engine: engine.to_owned(),
                file: format!("{:04}_{}.sql", m.version, m.description.replace(' ', "_")),
                sql: m.sql.to_string(),
            });
        }
    }
    Ok(Model {
        domains,
        projections,
        policies,
        routes: routes()?,
        route_tags: ROUTE_TAGS.to_vec(),
        platform_tables: pairs(PLATFORM_TABLES),
        domain_tables: DOMAIN_TABLES
            .iter()
            .map(|(t, d)| (t.to_string(), *d))
            .collect(),
        platform_migrations: pairs(PLATFORM_MIGRATIONS),
        migrations,
        schema_files: pairs(embedded::SCHEMA_FILES),
    })
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|&(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Migrations: a small scanner for the statements that decide ownership.

/// How a migration statement touches a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Write {
    Create,
    Alter,
    Index,
    Drop,
}

/// What one migration's SQL does to tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlFacts {
    /// (table, how), in statement order.
    pub writes: Vec<(String, Write)>,
    /// (referencing table, referenced table), from `REFERENCES` in `CREATE TABLE` (column or
    /// `FOREIGN KEY` constraints) and `ALTER TABLE … ADD … REFERENCES`.
    pub foreign_keys: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Identifier or keyword: lower-cased unless it was quoted.
    Word(String),
    Punct(char),
}

/// Splits SQL into statements of tokens, dropping comments and string literals.
fn statements(sql: &str) -> Vec<Vec<Token>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            // String literal ('' escapes a quote): skipped, it names no table.
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            current.push(Token::Word(
                chars[start..i.min(chars.len())].iter().collect(),
            ));
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            current.push(Token::Word(word.to_lowercase()));
        } else if c == ';' {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            i += 1;
        } else {
            if !c.is_whitespace() {
                current.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    }
}

/// Reads a possibly schema-qualified name at `*i`, returning its last part.
fn qualified_name(tokens: &[Token], i: &mut usize) -> Option<String> {
    let mut name = word(tokens.get(*i))?.to_owned();
    *i += 1;
    while tokens.get(*i) == Some(&Token::Punct('.')) {
        if let Some(next) = word(tokens.get(*i + 1)) {
            name = next.to_owned();
            *i += 2;
        } else {
            break;
        }
    }
    Some(name)
}

/// Skips the given optional words, in order, when present.
fn skip_words(tokens: &[Token], i: &mut usize, words: &[&str]) {
    while let Some(w) = word(tokens.get(*i)) {
        if words.contains(&w) {
            *i += 1;
        } else {
            break;
        }
    }
}

/// The tables a migration creates, alters, indexes or drops, and its foreign keys.
pub fn parse_sql(sql: &str) -> SqlFacts {
    let mut facts = SqlFacts::default();
    for st in statements(sql) {
        let first = word(st.first()).unwrap_or("");
        let mut i = 1;
        let target = match first {
            "create" => {
                skip_words(
                    &st,
                    &mut i,
                    &[
                        "or",
                        "replace",
                        "global",
                        "local",
                        "temp",
                        "temporary",
                        "unlogged",
                        "unique",
                    ],
                );
                match word(st.get(i)) {
                    Some("table") => {
                        i += 1;
                        skip_words(&st, &mut i, &["if", "not", "exists"]);
                        qualified_name(&st, &mut i).map(|t| (t, Write::Create))
                    }
                    Some("index") => {
                        // The table follows the first `ON` (the index name may be absent).
                        let on = st[i..].iter().position(|t| word(Some(t)) == Some("on"));
                        on.and_then(|p| {
                            let mut j = i + p + 1;
                            skip_words(&st, &mut j, &["only"]);
                            qualified_name(&st, &mut j).map(|t| (t, Write::Index))
                        })
                    }
                    _ => None,
                }
            }
            "alter" if word(st.get(1)) == Some("table") => {
                i = 2;
                skip_words(&st, &mut i, &["if", "exists", "only"]);
                qualified_name(&st, &mut i).map(|t| (t, Write::Alter))
            }
            "drop" if word(st.get(1)) == Some("table") => {
                i = 2;
                skip_words(&st, &mut i, &["if", "exists"]);
                qualified_name(&st, &mut i).map(|t| (t, Write::Drop))
            }
            _ => None,
        };
        let Some((table, how)) = target else {
            continue;
        };
        if matches!(how, Write::Create | Write::Alter) {
            for (k, t) in st.iter().enumerate() {
                if word(Some(t)) == Some("references") {
                    let mut j = k + 1;
                    if let Some(other) = qualified_name(&st, &mut j) {
                        facts.foreign_keys.push((table.clone(), other));
                    }
                }
            }
        }
        facts.writes.push((table, how));
    }
    facts
}

/// The owner a migration file's name declares: `0001_user_events.sql` → domain `user`,
/// `0011_follow_graph.sql` → projection `follow_graph`, `0007_platform_idempotency.sql` →
/// platform `idempotency`. The longest matching owner name wins (`user_directory` is the
/// projection, not the `user` domain).
pub fn migration_owner(file: &str, model: &Model) -> Option<Owner> {
    let stem = file.strip_suffix(".sql").unwrap_or(file);
    let stem = stem.trim_start_matches(|c: char| c.is_ascii_digit());
    let stem = stem.strip_prefix('_').unwrap_or(stem);
    if let Some((_, component)) = model.platform_migrations.iter().find(|(s, _)| s == stem) {
        return Some(Owner::Platform(component.clone()));
    }
    if let Some(rest) = stem.strip_prefix("platform_") {
        return Some(Owner::Platform(rest.to_owned()));
    }
    let matches = |name: &str| {
        stem == name
            || stem
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('_'))
    };
    let mut candidates: Vec<(usize, Owner)> = Vec::new();
    for d in &model.domains {
        if matches(d.domain.as_str()) {
            candidates.push((d.domain.as_str().len(), Owner::Domain(d.domain)));
        }
    }
    for p in &model.projections {
        if matches(&p.name) {
            candidates.push((p.name.len(), Owner::Projection(p.name.clone())));
        }
    }
    candidates
        .into_iter()
        .max_by_key(|(len, _)| *len)
        .map(|(_, o)| o)
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A table created or altered by migrations of two owners (or claimed by two in code).
    TableWrittenByTwoOwners,
    /// A foreign key from a table of one owner to a table of another.
    ForeignKeyAcrossOwners,
    /// An event type (current version) without `schemas/<domain>/<type>.v<N>.json`.
    MissingEventSchema,
    /// A table in a migration that its owner does not claim, or a migration with no owner.
    UnownedTable,
    /// A table an owner claims that no migration of an engine creates.
    MissingTable,
    /// A route whose tag has no owner in [`ROUTE_TAGS`], or an owner that does not exist.
    RouteWithoutOwner,
    /// A policy issuing a command of another domain than its own.
    PolicyIssuesForeignCommand,
    /// A policy consuming an event type that does not exist or a domain it does not read.
    PolicyConsumesUnknownEvent,
    /// The same aggregate type name in two domains.
    DuplicateAggregateType,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventTypeRow {
    pub event_type: String,
    pub schema_version: i32,
    pub schema_file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainRow {
    pub domain: Domain,
    pub events_table: String,
    pub aggregate_types: Vec<String>,
    pub event_types: Vec<EventTypeRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableRow {
    pub table: String,
    /// Normally exactly one; more is a violation.
    pub written_by: Vec<Owner>,
    /// The domains whose events fill the table: its projection's `domains()` (none for an events
    /// table or a platform table).
    pub reads: Vec<Domain>,
    /// `<engine>/<file>` of every migration that touches the table.
    pub migrations: Vec<String>,
    /// Tables it references by foreign key.
    pub references: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRow {
    pub policy: String,
    pub domain: Domain,
    pub consumes: Vec<String>,
    pub issues: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    pub method: String,
    pub path: String,
    pub tag: Option<String>,
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub domains: Vec<DomainRow>,
    pub tables: Vec<TableRow>,
    pub policies: Vec<PolicyRow>,
    pub routes: Vec<RouteRow>,
    pub violations: Vec<Violation>,
}

#[derive(Default)]
struct TableFacts {
    writers: BTreeSet<Owner>,
    migrations: BTreeSet<String>,
    engines: BTreeSet<String>,
    references: BTreeSet<String>,
}

/// Builds the matrix and finds every violation. Pure: reads only `model`.
pub fn check(model: &Model) -> Report {
    let mut violations = Vec::new();
    let mut v = |kind: ViolationKind, message: String| violations.push(Violation { kind, message });

    // What the code claims.
    let mut claims: BTreeMap<String, BTreeSet<Owner>> = BTreeMap::new();
    for d in &model.domains {
        claims
            .entry(d.events_table.clone())
            .or_default()
            .insert(Owner::Domain(d.domain));
    }
    for p in &model.projections {
        for t in &p.tables {
            claims
                .entry(t.clone())
                .or_default()
                .insert(Owner::Projection(p.name.clone()));
        }
    }
    for (t, d) in &model.domain_tables {
        claims
            .entry(t.clone())
            .or_default()
            .insert(Owner::Domain(*d));
    }
    for (t, c) in &model.platform_tables {
        claims
            .entry(t.clone())
            .or_default()
            .insert(Owner::Platform(c.clone()));
    }
    for (table, owners) in &claims {
        if owners.len() > 1 {
            v(
                ViolationKind::TableWrittenByTwoOwners,
                format!("table {table} is claimed by {}", join(owners)),
            );
        }
    }

    // What the migrations do.
    let mut tables: BTreeMap<String, TableFacts> = BTreeMap::new();
    let mut foreign_keys: Vec<(String, String, String)> = Vec::new();
    let engines: BTreeSet<String> = model.migrations.iter().map(|m| m.engine.clone()).collect();
    for m in &model.migrations {
        let at = format!("{}/{}", m.engine, m.file);
        let owner = migration_owner(&m.file, model);
        let facts = parse_sql(&m.sql);
        if owner.is_none() && !facts.writes.is_empty() {
            v(
                ViolationKind::UnownedTable,
                format!(
                    "migration {at} names no owner (expected <domain>_…, <projection>…, or platform_…)"
                ),
            );
        }
        for (table, _) in &facts.writes {
            let entry = tables.entry(table.clone()).or_default();
            entry.migrations.insert(at.clone());
            entry.engines.insert(m.engine.clone());
            if let Some(owner) = &owner {
                entry.writers.insert(owner.clone());
            }
        }
        for (from, to) in facts.foreign_keys {
            tables
                .entry(from.clone())
                .or_default()
                .references
                .insert(to.clone());
            foreign_keys.push((at.clone(), from, to));
        }
    }
    for (table, facts) in &tables {
        if facts.writers.len() > 1 {
            v(
                ViolationKind::TableWrittenByTwoOwners,
                format!(
                    "table {table} is written by {} ({})",
                    join(&facts.writers),
                    facts
                        .migrations
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        for writer in &facts.writers {
            let claimed = claims.get(table).is_some_and(|c| c.contains(writer));
            if !claimed {
                let claim = match writer {
                    Owner::Domain(d) => format!("its events table is {}", d.events_table()),
                    Owner::Projection(p) => format!("not in projection {p}'s tables()"),
                    Owner::Platform(c) => {
                        format!("not a known table of platform {c} (PLATFORM_TABLES)")
                    }
                };
                v(
                    ViolationKind::UnownedTable,
                    format!(
                        "table {table} is created by {writer} in {} but {writer} does not own it: {claim}",
                        facts.migrations.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    }
    for (table, owners) in &claims {
        for engine in &engines {
            let created = model.migrations.iter().any(|m| {
                &m.engine == engine
                    && parse_sql(&m.sql)
                        .writes
                        .iter()
                        .any(|(t, how)| t == table && *how == Write::Create)
            });
            if !created {
                v(
                    ViolationKind::MissingTable,
                    format!(
                        "table {table} (claimed by {}) is created by no {engine} migration",
                        join(owners)
                    ),
                );
            }
        }
    }
    let owner_of = |table: &str| -> BTreeSet<Owner> {
        let mut owners = tables
            .get(table)
            .map(|f| f.writers.clone())
            .unwrap_or_default();
        if let Some(c) = claims.get(table) {
            owners.extend(c.iter().cloned());
        }
        owners
    };
    for (at, from, to) in &foreign_keys {
        let (a, b) = (owner_of(from), owner_of(to));
        if a != b {
            v(
                ViolationKind::ForeignKeyAcrossOwners,
                format!(
                    "{at}: foreign key from {from} ({}) to {to} ({})",
                    join_or(&a, "no owner"),
                    join_or(&b, "no owner")
                ),
            );
        }
    }

    // Event types and their schema files.
    let schema_files: BTreeMap<&str, &str> = model
        .schema_files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let mut domains = Vec::new();
    let mut aggregate_owner: BTreeMap<&str, Domain> = BTreeMap::new();
    for d in &model.domains {
        for a in &d.aggregate_types {
            if let Some(other) = aggregate_owner.insert(a, d.domain) {
                v(
                    ViolationKind::DuplicateAggregateType,
                    format!(
                        "aggregate type {a} is declared by domains {other} and {}",
                        d.domain
                    ),
                );
            }
        }
        let mut rows = Vec::new();
        for (t, ver) in &d.event_types {
            let file = format!("{}/{t}.v{ver}.json", d.domain);
            match schema_files.get(file.as_str()) {
                None => v(
                    ViolationKind::MissingEventSchema,
                    format!(
                        "event type {}.{t} v{ver} has no schema file event-schemas/schemas/{file}",
                        d.domain
                    ),
                ),
                Some(text) if serde_json::from_str::<serde_json::Value>(text).is_err() => v(
                    ViolationKind::MissingEventSchema,
                    format!("schema file event-schemas/schemas/{file} is not valid JSON"),
                ),
                Some(_) => {}
            }
            rows.push(EventTypeRow {
                event_type: t.clone(),
                schema_version: *ver,
                schema_file: file,
            });
        }
        domains.push(DomainRow {
            domain: d.domain,
            events_table: d.events_table.clone(),
            aggregate_types: d.aggregate_types.clone(),
            event_types: rows,
        });
    }

    // Policies.
    let event_exists = |domain: Domain, t: &str| {
        model
            .domains
            .iter()
            .any(|d| d.domain == domain && d.event_types.iter().any(|(n, _)| n == t))
    };
    let mut policies = Vec::new();
    for p in &model.policies {
        for c in &p.issues {
            let domain = c.split_once('.').and_then(|(d, _)| Domain::parse(d));
            if domain != Some(p.domain) {
                v(
                    ViolationKind::PolicyIssuesForeignCommand,
                    format!(
                        "policy {} (domain {}) issues {c}, a command of another domain",
                        p.name, p.domain
                    ),
                );
            }
        }
        for e in &p.consumes {
            let parsed = e
                .split_once('.')
                .and_then(|(d, t)| Domain::parse(d).map(|d| (d, t)));
            let known = parsed.is_some_and(|(d, t)| p.reads.contains(&d) && event_exists(d, t));
            if !known {
                v(
                    ViolationKind::PolicyConsumesUnknownEvent,
                    format!(
                        "policy {} consumes {e}, which is not an event type of a domain it reads ({})",
                        p.name,
                        p.reads.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        policies.push(PolicyRow {
            policy: p.name.clone(),
            domain: p.domain,
            consumes: p.consumes.clone(),
            issues: p.issues.clone(),
        });
    }

    // Routes.
    // The search view is a projection without SQL tables (a tantivy index; ADR 0013).
    let projection_names: BTreeSet<&str> = model
        .projections
        .iter()
        .map(|p| p.name.as_str())
        .chain([nova_projections::search::NAME])
        .collect();
    let mut routes = Vec::new();
    let mut used_tags = BTreeSet::new();
    for r in &model.routes {
        let mapped = r
            .tags
            .iter()
            .find_map(|t| model.route_tags.iter().find(|m| m.tag == t));
        let owner = mapped.map(|m| {
            used_tags.insert(m.tag);
            if r.method == "GET" || r.method == "HEAD" {
                m.reads.owner()
            } else {
                m.commands.owner()
            }
        });
        match &owner {
            None => v(
                ViolationKind::RouteWithoutOwner,
                format!(
                    "route {} {} (tags: {}) has no domain or view: add its tag to ROUTE_TAGS",
                    r.method,
                    r.path,
                    if r.tags.is_empty() {
                        "none".to_owned()
                    } else {
                        r.tags.join(", ")
                    }
                ),
            ),
            Some(Owner::Projection(p)) if !projection_names.contains(p.as_str()) => v(
                ViolationKind::RouteWithoutOwner,
                format!(
                    "route {} {} is mapped to view {p}, which is not a projection",
                    r.method, r.path
                ),
            ),
            _ => {}
        }
        routes.push(RouteRow {
            method: r.method.clone(),
            path: r.path.clone(),
            tag: mapped.map(|m| m.tag.to_owned()),
            owner,
        });
    }
    for m in &model.route_tags {
        if !used_tags.contains(m.tag) {
            v(
                ViolationKind::RouteWithoutOwner,
                format!("ROUTE_TAGS lists tag {}, which no route has", m.tag),
            );
        }
    }
    routes.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));

    // The table matrix: every table that is claimed or in a migration.
    let reads_of = |owner: &Owner| -> Vec<Domain> {
        match owner {
            Owner::Domain(_) | Owner::Platform(_) => Vec::new(),
            Owner::Projection(p) => model
                .projections
                .iter()
                .find(|x| &x.name == p)
                .map(|x| x.reads.clone())
                .unwrap_or_default(),
        }
    };
    let names: BTreeSet<&String> = claims.keys().chain(tables.keys()).collect();
    let mut table_rows: Vec<TableRow> = names
        .into_iter()
        .map(|t| {
            let owners = owner_of(t);
            let facts = tables.get(t);
            let mut reads: Vec<Domain> = owners.iter().flat_map(reads_of).collect();
            reads.sort();
            reads.dedup();
            TableRow {
                table: t.clone(),
                written_by: owners.into_iter().collect(),
                reads,
                migrations: facts
                    .map(|f| f.migrations.iter().cloned().collect())
                    .unwrap_or_default(),
                references: facts
                    .map(|f| f.references.iter().cloned().collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    // Events tables first (domain order), then projections, then platform.
    table_rows.sort_by(|a, b| {
        let key = |r: &TableRow| r.written_by.first().map(|o| (o.clone(), r.table.clone()));
        key(a).cmp(&key(b))
    });

    violations.sort();
    violations.dedup();
    Report {
        ok: violations.is_empty(),
        domains,
        tables: table_rows,
        policies,
        routes,
        violations,
    }
}

fn join(owners: &BTreeSet<Owner>) -> String {
    owners
        .iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

fn join_or(owners: &BTreeSet<Owner>, none: &str) -> String {
    if owners.is_empty() {
        none.to_owned()
    } else {
        join(owners)
    }
}

// ---------------------------------------------------------------------------------------------
// Text output.

/// Left-aligned columns; the last column is wrapped at `wrap` characters.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], wrap: usize) {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (k, cell) in row.iter().enumerate().take(n - 1) {
            width[k] = width[k].max(cell.len());
        }
    }
    let line = |out: &mut String, cells: &[&str]| {
        let mut s = String::from("  ");
        for (k, cell) in cells.iter().enumerate() {
            if k + 1 == n {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = width[k]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, header);
    for row in rows {
        let last = row.last().map(String::as_str).unwrap_or("");
        let mut chunks: Vec<String> = Vec::new();
        for part in last.split(", ") {
            match chunks.last_mut() {
                Some(c) if c.len() + 2 + part.len() <= wrap => {
                    c.push_str(", ");
                    c.push_str(part);
                }
                _ => chunks.push(part.to_owned()),
            }
        }
        let last_chunk = chunks.len().saturating_sub(1);
        for (k, chunk) in chunks.iter_mut().enumerate() {
            if k < last_chunk {
                chunk.push(',');
            }
            let mut cells: Vec<&str> = if k == 0 {
                row[..n - 1].iter().map(String::as_str).collect()
            } else {
                vec![""; n - 1]
            };
            cells.push(chunk);
            line(out, &cells);
        }
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The report for people: a section per kind, then the violations.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("Domains\n");
    let rows: Vec<Vec<String>> = report
        .domains
        .iter()
        .map(|d| {
            vec![
                d.domain.to_string(),
                d.events_table.clone(),
                list(&d.aggregate_types),
                list(
                    &d.event_types
                        .iter()
                        .map(|e| format!("{} v{}", e.event_type, e.schema_version))
                        .collect::<Vec<_>>(),
                ),
            ]
        })
        .collect();
    table(
        &mut out,
        &["domain", "events table", "aggregates", "event types"],
        &rows,
        60,
    );

    out.push_str("\nTables\n");
    let rows: Vec<Vec<String>> = report
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                list(&t.written_by),
                list(&t.reads),
                list(&t.references),
            ]
        })
        .collect();
    table(
        &mut out,
        &["table", "written by", "reads", "references"],
        &rows,
        60,
    );

    out.push_str("\nPolicies\n");
    let rows: Vec<Vec<String>> = report
        .policies
        .iter()
        .map(|p| {
            vec![
                p.policy.clone(),
                p.domain.to_string(),
                list(&p.consumes),
                list(&p.issues),
            ]
        })
        .collect();
    table(
        &mut out,
        &["policy", "domain", "consumes", "issues"],
        &rows,
        60,
    );

    out.push_str("\nRoutes\n");
    let rows: Vec<Vec<String>> = report
        .routes
        .iter()
        .map(|r| {
            vec![
                r.method.clone(),
                r.path.clone(),
                r.tag.clone().unwrap_or_else(|| "-".into()),
                r.owner
                    .as_ref()
                    .map(|o| match o {
                        Owner::Projection(p) => format!("view {p}"),
                        o => o.to_string(),
                    })
                    .unwrap_or_else(|| "NONE".into()),
            ]
        })
        .collect();
    table(&mut out, &["method", "path", "tag", "owner"], &rows, 60);

    if report.violations.is_empty() {
        out.push_str("\nViolations: none\n");
    } else {
        out.push_str(&format!("\nViolations: {}\n", report.violations.len()));
        for v in &report.violations {
            let kind = serde_json::to_value(v.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push_str(&format!("  [{kind}] {}\n", v.message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(file: &str, sql: &str) -> MigrationFile {
        MigrationFile {
            engine: "postgres".into(),
            file: file.into(),
            sql: sql.into(),
        }
    }

    /// A small, clean model: two domains, one projection, one policy, two routes.
    fn fixture() -> Model {
        Model {
            domains: vec![
                DomainInfo {
                    domain: Domain::User,
                    events_table: "user_events".into(),
                    aggregate_types: vec!["user".into()],
                    event_types: vec![("registered".into(), 1), ("deactivated".into(), 2)],
                },
                DomainInfo {
                    domain: Domain::Follow,
                    events_table: "follow_events".into(),
                    aggregate_types: vec!["relationship".into()],
                    event_types: vec![("followed".into(), 1)],
                },
            ],
            projections: vec![ProjectionInfo {
                name: "user_directory".into(),
                reads: vec![Domain::User],
                tables: vec!["user_directory".into()],
            }],
            policies: vec![PolicyInfo {
                name: "policy_follow_on_user_deactivated".into(),
                domain: Domain::Follow,
                reads: vec![Domain::User],
                consumes: vec!["user.deactivated".into()],
                issues: vec!["follow.remove_user".into()],
            }],
            routes: vec![
                RouteInfo {
                    method: "GET".into(),
                    path: "/v1/users/{id}".into(),
                    tags: vec!["identity".into()],
                },
                RouteInfo {
                    method: "POST".into(),
                    path: "/v1/users".into(),
                    tags: vec!["identity".into()],
                },
            ],
            route_tags: vec![RouteTag::new(
                "identity",
                OwnerRef::Domain(Domain::User),
                OwnerRef::View("user_directory"),
            )],
            platform_tables: vec![("idempotency_keys".into(), "idempotency".into())],
            domain_tables: Vec::new(),
            platform_migrations: Vec::new(),
            migrations: vec![
                migration(
                    "0001_user_events.sql",
                    "-- Owner: user domain.\nCREATE TABLE user_events (position BIGINT PRIMARY KEY, event_id UUID NOT NULL UNIQUE);\nCREATE INDEX user_events_type_idx ON user_events (event_type, position);",
                ),
                migration(
                    "0002_follow_events.sql",
                    "CREATE TABLE follow_events (position BIGINT PRIMARY KEY);",
                ),
                migration(
                    "0003_platform_idempotency.sql",
                    "CREATE TABLE idempotency_keys (actor TEXT NOT NULL, PRIMARY KEY (actor));",
                ),
                migration(
                    "0004_user_directory.sql",
                    "CREATE TABLE user_directory (user_id TEXT NOT NULL PRIMARY KEY, username TEXT);\nCREATE INDEX user_directory_username_idx ON user_directory (username);",
                ),
            ],
            schema_files: vec![
                ("user/registered.v1.json".into(), "{}".into()),
                ("user/deactivated.v2.json".into(), "{}".into()),
                ("follow/followed.v1.json".into(), "{}".into()),
            ],
        }
    }

    fn kinds(model: &Model) -> Vec<ViolationKind> {
        check(model).violations.iter().map(|v| v.kind).collect()
    }

    /// The violations of `kind`, failing the test when there are none.
    fn caught(model: &Model, kind: ViolationKind) -> Vec<String> {
        let report = check(model);
        assert!(!report.ok, "a planted violation leaves the report not ok");
        let found: Vec<String> = report
            .violations
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| v.message.clone())
            .collect();
        assert!(
            !found.is_empty(),
            "expected {kind:?}, got {:?}",
            report.violations
        );
        found
    }

    #[test]
    fn the_policy_catalog_names_every_policy_the_application_runs() {
        let built: Vec<(String, Vec<Domain>)> = policies()
            .unwrap()
            .iter()
            .map(|p| (p.name().to_owned(), p.domains().to_vec()))
            .collect();
        let catalog: Vec<(String, Vec<Domain>)> = nova_policies::CATALOG
            .iter()
            .map(|(n, d)| ((*n).to_owned(), d.to_vec()))
            .collect();
        assert_eq!(
            built, catalog,
            "nova_policies::CATALOG must list nova_policies::all()"
        );
    }

    #[test]
    fn the_fixture_is_clean() {
        let report = check(&fixture());
        assert_eq!(report.violations, Vec::new());
        assert!(report.ok);
        let row = report
            .tables
            .iter()
            .find(|t| t.table == "user_directory")
            .expect("user_directory row");
        assert_eq!(
            row.written_by,
            vec![Owner::Projection("user_directory".into())]
        );
        assert_eq!(row.reads, vec![Domain::User]);
        let get = report
            .routes
            .iter()
            .find(|r| r.method == "GET")
            .expect("GET");
        assert_eq!(get.owner, Some(Owner::Projection("user_directory".into())));
        let post = report
            .routes
            .iter()
            .find(|r| r.method == "POST")
            .expect("POST");
        assert_eq!(post.owner, Some(Owner::Domain(Domain::User)));
    }

    #[test]
    fn a_table_written_by_two_owners_is_caught() {
        let mut model = fixture();
        model.migrations.push(migration(
            "0005_follow_backfill.sql",
            "ALTER TABLE user_events ADD COLUMN note TEXT;",
        ));
        let found = caught(&model, ViolationKind::TableWrittenByTwoOwners);
        assert!(found[0].contains("user_events"), "{found:?}");
        assert!(
            found[0].contains("domain follow and domain user")
                || found[0].contains("domain user and domain follow"),
            "{found:?}"
        );

        // Claimed by two in code is the same mistake.
        let mut model = fixture();
        model.projections.push(ProjectionInfo {
            name: "other".into(),
            reads: vec![Domain::User],
            tables: vec!["user_directory".into()],
        });
        caught(&model, ViolationKind::TableWrittenByTwoOwners);

        // An index on another owner's table is a write too.
        let mut model = fixture();
        model.migrations.push(migration(
            "0005_user_directory_idx.sql",
            "CREATE UNIQUE INDEX IF NOT EXISTS x ON public.user_events (event_id);",
        ));
        caught(&model, ViolationKind::TableWrittenByTwoOwners);
    }

    #[test]
    fn a_foreign_key_between_owners_is_caught() {
        let mut model = fixture();
        model.migrations[3] = migration(
            "0004_user_directory.sql",
            "CREATE TABLE user_directory (user_id TEXT NOT NULL PRIMARY KEY REFERENCES user_events (event_id));",
        );
        let found = caught(&model, ViolationKind::ForeignKeyAcrossOwners);
        assert!(
            found[0].contains(
                "from user_directory (projection user_directory) to user_events (domain user)"
            ),
            "{found:?}"
        );

        let mut model = fixture();
        model.migrations.push(migration(
            "0005_user_directory_fk.sql",
            "ALTER TABLE user_directory ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES \"follow_events\" (position);",
        ));
        caught(&model, ViolationKind::ForeignKeyAcrossOwners);

        // Within one owner a foreign key is allowed.
        let mut model = fixture();
        model.projections[0]
            .tables
            .push("user_directory_alias".into());
        model.migrations.push(migration(
            "0005_user_directory_alias.sql",
            "CREATE TABLE user_directory_alias (alias TEXT PRIMARY KEY, user_id TEXT, FOREIGN KEY (user_id) REFERENCES user_directory (user_id));",
        ));
        assert_eq!(kinds(&model), Vec::new());
    }

    #[test]
    fn an_event_type_without_its_schema_file_is_caught() {
        let mut model = fixture();
        model
            .schema_files
            .retain(|(n, _)| n != "user/deactivated.v2.json");
        let found = caught(&model, ViolationKind::MissingEventSchema);
        assert!(
            found[0].contains("event-schemas/schemas/user/deactivated.v2.json"),
            "{found:?}"
        );

        // The file of an older version does not count for the current one.
        model
            .schema_files
            .push(("user/deactivated.v1.json".into(), "{}".into()));
        caught(&model, ViolationKind::MissingEventSchema);

        let mut model = fixture();
        model.schema_files[0].1 = "{ not json".into();
        caught(&model, ViolationKind::MissingEventSchema);
    }

    #[test]
    fn a_table_no_one_owns_is_caught() {
        // A projection table not in the projection's tables().
        let mut model = fixture();
        model.migrations.push(migration(
            "0005_user_directory_extra.sql",
            "CREATE TABLE user_directory_extra (id TEXT PRIMARY KEY);",
        ));
        let found = caught(&model, ViolationKind::UnownedTable);
        assert!(found[0].contains("tables()"), "{found:?}");

        // A second table created by a domain's migration (a domain owns its events table only).
        let mut model = fixture();
        model.migrations.push(migration(
            "0005_user_archive.sql",
            "CREATE TABLE user_archive (id TEXT PRIMARY KEY);",
        ));
        let found = caught(&model, ViolationKind::UnownedTable);
        assert!(
            found[0].contains("events table is user_events"),
            "{found:?}"
        );

        // A platform table not in the known list.
        let mut model = fixture();
        model.migrations.push(migration(
            "0005_platform_cache.sql",
            "CREATE TABLE cache (k TEXT PRIMARY KEY);",
        ));
        caught(&model, ViolationKind::UnownedTable);

        // A migration whose name names no owner.
        let mut model = fixture();
        model.migrations.push(migration(
            "0005_misc.sql",
            "CREATE TABLE misc (k TEXT PRIMARY KEY);",
        ));
        let found = caught(&model, ViolationKind::UnownedTable);
        assert!(
            found.iter().any(|m| m.contains("names no owner")),
            "{found:?}"
        );

        // And the reverse: a claimed table that no migration creates.
        let mut model = fixture();
        model.projections[0]
            .tables
            .push("user_directory_more".into());
        caught(&model, ViolationKind::MissingTable);
    }

    #[test]
    fn a_route_without_domain_or_view_is_caught() {
        let mut model = fixture();
        model.routes.push(RouteInfo {
            method: "GET".into(),
            path: "/v1/search".into(),
            tags: vec!["search".into()],
        });
        let found = caught(&model, ViolationKind::RouteWithoutOwner);
        assert!(found[0].contains("GET /v1/search"), "{found:?}");

        let mut model = fixture();
        model.routes[0].tags.clear();
        caught(&model, ViolationKind::RouteWithoutOwner);

        // A mapping to a view that is not a projection.
        let mut model = fixture();
        model.route_tags[0].reads = OwnerRef::View("no_such_view");
        caught(&model, ViolationKind::RouteWithoutOwner);
    }

    #[test]
    fn a_policy_issuing_another_domains_command_is_caught() {
        let mut model = fixture();
        model.policies[0].issues.push("user.deactivate".into());
        let found = caught(&model, ViolationKind::PolicyIssuesForeignCommand);
        assert!(found[0].contains("user.deactivate"), "{found:?}");

        let mut model = fixture();
        model.policies[0].consumes.push("user.no_such_event".into());
        caught(&model, ViolationKind::PolicyConsumesUnknownEvent);
    }

    #[test]
    fn an_aggregate_type_in_two_domains_is_caught() {
        let mut model = fixture();
        model.domains[1].aggregate_types.push("user".into());
        caught(&model, ViolationKind::DuplicateAggregateType);
    }

    #[test]
    fn the_sql_scanner_reads_the_statements_that_decide_ownership() {
        let facts = parse_sql(
            "/* header; with a semicolon */\n\
             CREATE TABLE IF NOT EXISTS \"Quoted\" (a TEXT DEFAULT 'x; CREATE TABLE fake (b)', \
             b TEXT REFERENCES public.other(id));\n\
             -- CREATE TABLE commented_out (x TEXT);\n\
             CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON ONLY t2 (a);\n\
             CREATE INDEX ON t3 (a);\n\
             ALTER TABLE IF EXISTS ONLY t4 ADD FOREIGN KEY (a) REFERENCES t5 (b);\n\
             DROP TABLE IF EXISTS t6;\n\
             INSERT INTO t7 VALUES (1);",
        );
        assert_eq!(
            facts.writes,
            vec![
                ("Quoted".to_owned(), Write::Create),
                ("t2".to_owned(), Write::Index),
                ("t3".to_owned(), Write::Index),
                ("t4".to_owned(), Write::Alter),
                ("t6".to_owned(), Write::Drop),
            ]
        );
        assert_eq!(
            facts.foreign_keys,
            vec![
                ("Quoted".to_owned(), "other".to_owned()),
                ("t4".to_owned(), "t5".to_owned()),
            ]
        );
    }

    #[test]
    fn a_migration_file_name_names_its_owner() {
        let mut model = fixture();
        model
            .platform_migrations
            .push(("relay_checkpoints".into(), "relay".into()));
        let owner = |f: &str| migration_owner(f, &model);
        assert_eq!(
            owner("0001_user_events.sql"),
            Some(Owner::Domain(Domain::User))
        );
        assert_eq!(
            owner("0009_user_directory.sql"),
            Some(Owner::Projection("user_directory".into()))
        );
        assert_eq!(
            owner("0007_platform_idempotency.sql"),
            Some(Owner::Platform("idempotency".into()))
        );
        assert_eq!(
            owner("0010_relay_checkpoints.sql"),
            Some(Owner::Platform("relay".into()))
        );
        assert_eq!(owner("0012_users.sql"), None);
    }

    /// The real code and migrations: no violation, and the rows everyone relies on.
    #[test]
    fn the_real_model_has_no_violations() {
        let model = collect().expect("model collects without a database");
        let report = check(&model);
        assert_eq!(report.violations, Vec::new(), "{}", render_text(&report));
        assert!(report.ok);

        assert_eq!(report.domains.len(), Domain::ALL.len());
        let user = &report.domains[0];
        assert_eq!(user.domain, Domain::User);
        assert_eq!(user.events_table, "user_events");
        assert!(user.aggregate_types.contains(&"user".to_owned()));
        assert!(user.aggregate_types.contains(&"username_claim".to_owned()));
        assert!(user
            .event_types
            .iter()
            .any(|e| e.event_type == "registered"));

        let table = |name: &str| {
            report
                .tables
                .iter()
                .find(|t| t.table == name)
                .unwrap_or_else(|| panic!("table {name} listed"))
                .clone()
        };
        let directory = table("user_directory");
        assert_eq!(
            directory.written_by,
            vec![Owner::Projection("user_directory".into())]
        );
        assert_eq!(directory.reads, vec![Domain::User]);
        assert!(directory
            .migrations
            .contains(&"postgres/0009_user_directory.sql".to_owned()));
        assert!(directory
            .migrations
            .contains(&"sqlite/0009_user_directory.sql".to_owned()));
        assert_eq!(
            table("user_events").written_by,
            vec![Owner::Domain(Domain::User)]
        );
        assert_eq!(
            table("feed_timeline").reads,
            vec![Domain::User, Domain::Follow, Domain::Post]
        );
        assert_eq!(
            table("idempotency_keys").written_by,
            vec![Owner::Platform("idempotency".into())]
        );

        let policy = report
            .policies
            .iter()
            .find(|p| p.policy == "policy_post_on_user_deactivated")
            .expect("post policy listed");
        assert_eq!(policy.domain, Domain::Post);
        assert_eq!(policy.consumes, vec!["user.deactivated".to_owned()]);
        assert_eq!(policy.issues, vec!["post.hide".to_owned()]);

        let route = |method: &str, path: &str| {
            report
                .routes
                .iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap_or_else(|| panic!("route {method} {path} listed"))
                .owner
                .clone()
        };
        assert_eq!(
            route("GET", "/v1/feed"),
            Some(Owner::Projection("feed".into()))
        );
        assert_eq!(
            route("POST", "/v1/posts"),
            Some(Owner::Domain(Domain::Post))
        );
        assert_eq!(
            route("GET", "/v1/users/{id}/followers"),
            Some(Owner::Projection("follow_graph".into()))
        );
        assert!(report.routes.iter().all(|r| r.owner.is_some()));
    }
}

//! The search index's layout (ADR 0013): one tantivy index of users and posts, its schema, its
//! analyzer and its checkpoint. The projector (`nova_projections::search`) writes it; the query
//! (`nova_queries::search`) reads it. Both open it through [`SearchIndex`], so the schema and the
//! analyzer that indexed a text are the ones that read it.
//!
//! The projector's checkpoint is the payload of the index's last commit ([`Positions`]): a
//! crash cannot leave index and checkpoint apart, because both are written by one commit.
//!
//! The index directory holds *generations* ([`SearchRoot`]): each a complete tantivy index in
//! `gen-<id>/`, the served one named by the file `CURRENT`. A rebuild builds a new generation
//! beside the served one and proposes it (`NEXT`); the live projector catches it up and
//! promotes it, and every reader follows `CURRENT` ([`LiveIndex`]) — no reader ever sees a
//! missing or half-built index.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{Index, IndexReader, ReloadPolicy};

/// The analyzer of every indexed text and every query: words split on non-alphanumerics,
/// lowercased, folded to ASCII (`Café` matches `cafe`); words longer than 40 bytes dropped.
pub const ANALYZER: &str = "nova";

/// `kind` values.
pub const USER: &str = "user";
pub const POST: &str = "post";
/// A deactivated user: kept so that the projector (and a restart of it) knows the author's
/// posts must not be indexed, whichever of the user and post domains it applies first.
pub const INACTIVE: &str = "inactive";

#[derive(Debug, thiserror::Error)]
#[error("search index: {0}")]
pub struct SearchError(pub String);

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError(e.to_string())
    }
}

impl From<tantivy::directory::error::OpenDirectoryError> for SearchError {
    fn from(e: tantivy::directory::error::OpenDirectoryError) -> Self {
        SearchError(e.to_string())
    }
}

impl From<std::io::Error> for SearchError {
    fn from(e: std::io::Error) -> Self {
        SearchError(e.to_string())
    }
}

/// The fields of a document.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// `user`, `post` or `inactive` (raw).
    pub kind: Field,
    /// The user's or post's id (raw, stored): the term updates and deletes go by.
    pub id: Field,
    /// A post's author (raw, stored): the term a deactivation deletes by.
    pub author: Field,
    /// What is searched: username and display name, or a post's content (analyzed).
    pub text: Field,
    pub username: Field,
    pub display_name: Field,
    pub content: Field,
    /// A post's creation (a user's registration) time, microseconds since the epoch (fast,
    /// stored): the recency key.
    pub created_at: Field,
    /// The id as two fast u64 halves: the last tie-break of the ranking and part of the
    /// cursor, read without loading stored documents.
    pub id_hi: Field,
    pub id_lo: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        kind: b.add_text_field("kind", STRING),
        id: b.add_text_field("id", STRING | STORED),
        author: b.add_text_field("author", STRING | STORED),
        text: b.add_text_field("text", text),
        username: b.add_text_field("username", STORED),
        display_name: b.add_text_field("display_name", STORED),
        content: b.add_text_field("content", STORED),
        created_at: b.add_i64_field("created_at", FAST | STORED),
        id_hi: b.add_u64_field("id_hi", FAST),
        id_lo: b.add_u64_field("id_lo", FAST),
    };
    (b.build(), fields)
}

/// The analyzer registered as [`ANALYZER`].
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The words of `text` as the index sees them.
pub fn words(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// Where the projector stands, per domain: the commit payload of the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    pub user: i64,
    pub post: i64,
}

impl Positions {
    pub fn of(&self, domain: nova_event_schemas::Domain) -> i64 {
        match domain {
            nova_event_schemas::Domain::User => self.user,
            nova_event_schemas::Domain::Post => self.post,
            _ => 0,
        }
    }

    pub fn set(&mut self, domain: nova_event_schemas::Domain, position: i64) {
        match domain {
            nova_event_schemas::Domain::User => self.user = position,
            nova_event_schemas::Domain::Post => self.post = position,
            _ => {}
        }
    }
}

/// An open search index and a reader of it. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

impl SearchIndex {
    /// Opens the index in `dir`, creating the directory and an empty index if there is none.
    /// The reader reloads on every commit seen in the directory (also a commit by another
    /// process), and may be reloaded at once with [`SearchIndex::refresh`].
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir)?;
        let index = Index::open_or_create(directory, schema)?;
        Self::from_index(index, fields)
    }

    /// An index in memory (benchmarks and unit tests).
    pub fn in_ram() -> Result<SearchIndex, SearchError> {
        let (schema, fields) = schema();
        Self::from_index(Index::create_in_ram(schema), fields)
    }

    fn from_index(index: Index, fields: Fields) -> Result<SearchIndex, SearchError> {
        index.tokenizers().register(ANALYZER, analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        Ok(SearchIndex {
            index,
            reader,
            fields,
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn reader(&self) -> &IndexReader {
        &self.reader
    }

    pub fn fields(&self) -> Fields {
        self.fields
    }

    /// Makes the reader see the last commit now.
    pub fn refresh(&self) -> Result<(), SearchError> {
        Ok(self.reader.reload()?)
    }

    /// The positions of the last commit (zero for an index never committed by a projector).
    pub fn positions(&self) -> Result<Positions, SearchError> {
        let metas = self.index.load_metas()?;
        match metas.payload {
            None => Ok(Positions::default()),
            Some(p) => serde_json::from_str(&p)
                .map_err(|e| SearchError(format!("commit payload {p:?} does not decode: {e}"))),
        }
    }
}

/// The file naming the generation that is served.
const CURRENT: &str = "CURRENT";
/// The file naming a rebuilt generation waiting for the live projector to take it over.
const NEXT: &str = "NEXT";
const GENERATION_PREFIX: &str = "gen-";
const BUILD_PREFIX: &str = "build-";
/// A root that holds an index itself (the layout before generations) serves it as this name.
const LEGACY: &str = ".";

/// The index directory and its generations. Pointer files are replaced atomically (written
/// aside, synced, renamed), so a crash leaves either the old or the new generation served.
#[derive(Debug, Clone)]
pub struct SearchRoot {
    dir: PathBuf,
}

impl SearchRoot {
    pub fn new(dir: impl Into<PathBuf>) -> SearchRoot {
        SearchRoot { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> PathBuf {
        if name == LEGACY {
            self.dir.clone()
        } else {
            self.dir.join(name)
        }
    }

    fn read_pointer(&self, file: &str) -> Result<Option<String>, SearchError> {
        match std::fs::read_to_string(self.dir.join(file)) {
            Ok(s) => {
                let name = s.trim();
                let valid = name == LEGACY
                    || (name.starts_with(GENERATION_PREFIX)
                        && !name.contains(['/', '\\'])
                        && name != GENERATION_PREFIX);
                if !valid {
                    return Err(SearchError(format!("{file} names no generation: {name:?}")));
                }
                Ok(Some(name.to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `file` to name `generation`: aside, synced, renamed over, directory synced.
    fn write_pointer(&self, file: &str, generation: &str) -> Result<(), SearchError> {
        let aside = self
            .dir
            .join(format!(".{file}.{}", uuid::Uuid::now_v7().simple()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&aside)?;
            f.write_all(generation.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&aside, self.dir.join(file))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The name of the generation served now. A new root gets its first (empty) generation;
    /// when several processes start at once, exactly one of their proposals wins.
    pub fn current_name(&self) -> Result<String, SearchError> {
        if let Some(name) = self.read_pointer(CURRENT)? {
            return Ok(name);
        }
        std::fs::create_dir_all(&self.dir)?;
        if self.dir.join("meta.json").exists() {
            return Ok(LEGACY.to_owned());
        }
        let name = format!("{GENERATION_PREFIX}{}", uuid::Uuid::now_v7().simple());
        std::fs::create_dir_all(self.dir.join(&name))?;
        let aside = self.dir.join(format!(".{CURRENT}.{name}"));
        std::fs::write(&aside, name.as_bytes())?;
        // A hard link fails if CURRENT exists: the first process to link wins, the others
        // read its choice (and their empty generation is swept later).
        let linked = std::fs::hard_link(&aside, self.dir.join(CURRENT));
        std::fs::remove_file(&aside)?;
        match linked {
            Ok(()) => {
                std::fs::File::open(&self.dir)?.sync_all()?;
                Ok(name)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .read_pointer(CURRENT)?
                .ok_or_else(|| SearchError("CURRENT vanished".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The directory of the generation served now.
    pub fn current(&self) -> Result<PathBuf, SearchError> {
        Ok(self.path_of(&self.current_name()?))
    }

    /// The rebuilt generation waiting to be taken over, if any.
    pub fn proposed(&self) -> Result<Option<(String, PathBuf)>, SearchError> {
        Ok(self.read_pointer(NEXT)?.map(|n| {
            let path = self.path_of(&n);
            (n, path)
        }))
    }

    /// A fresh directory to build a generation in (not served, not swept).
    pub fn start_build(&self) -> Result<PathBuf, SearchError> {
        let dir = self
            .dir
            .join(format!("{BUILD_PREFIX}{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Turns a finished build into a generation and proposes it (`NEXT`); returns its name.
    pub fn propose(&self, built: &Path) -> Result<String, SearchError> {
        let id = built
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(BUILD_PREFIX))
            .ok_or_else(|| SearchError(format!("{} is not a build directory", built.display())))?;
        let name = format!("{GENERATION_PREFIX}{id}");
        std::fs::rename(built, self.dir.join(&name))?;
        self.write_pointer(NEXT, &name)?;
        Ok(name)
    }

    /// Serves generation `name` from now on; withdraws the proposal if it named it.
    pub fn promote(&self, name: &str) -> Result<(), SearchError> {
        self.write_pointer(CURRENT, name)?;
        if self.read_pointer(NEXT)?.as_deref() == Some(name) {
            match std::fs::remove_file(self.dir.join(NEXT)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes the build directories left by rebuilds that died before proposing theirs. Only
    /// for the holder of the projection's rebuild lease: no other build runs in this root then.
    pub fn sweep_builds(&self) -> Result<Vec<String>, SearchError> {
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(BUILD_PREFIX) {
                std::fs::remove_dir_all(entry.path())?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Removes every generation that is neither served nor proposed (builds in progress are
    /// left alone). Readers that still hold an old generation's files keep them open: the
    /// files go when the last handle closes.
    pub fn sweep(&self) -> Result<Vec<String>, SearchError> {
        let current = self.read_pointer(CURRENT)?;
        let next = self.read_pointer(NEXT)?;
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !name.starts_with(GENERATION_PREFIX)
                || Some(&name) == current.as_ref()
                || Some(&name) == next.as_ref()
            {
                continue;
            }
            std::fs::remove_dir_all(entry.path())?;
            removed.push(name);
        }
        Ok(removed)
    }
}

/// How often a reader looks at `CURRENT` on its own (a projector in the same process switches
/// its readers at once; another process's readers follow within this time).
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The served generation of a [`SearchRoot`], followed as it changes. Cheap to clone.
#[derive(Clone)]
pub struct LiveIndex {
    root: SearchRoot,
    current: Arc<RwLock<(String, SearchIndex)>>,
    checked: Arc<Mutex<Instant>>,
}

impl LiveIndex {
    /// Opens the generation served now (creating the root and a first generation if needed).
    pub fn open(dir: &Path) -> Result<LiveIndex, SearchError> {
        let root = SearchRoot::new(dir);
        let name = root.current_name()?;
        let index = SearchIndex::open(&root.path_of(&name))?;
        Ok(LiveIndex {
            root,
            current: Arc::new(RwLock::new((name, index))),
            checked: Arc::new(Mutex::new(Instant::now())),
        })
    }

    pub fn root(&self) -> &SearchRoot {
        &self.root
    }

    /// The generation served now: its name and index. Looks at `CURRENT` at most every
    /// [`FOLLOW_EVERY`]; on trouble reading it, keeps serving the generation it has.
    pub fn get(&self) -> (String, SearchIndex) {
        let due = self
            .checked
            .try_lock()
            .map(|mut at| {
                let due = at.elapsed() >= FOLLOW_EVERY;
                if due {
                    *at = Instant::now();
                }
                due
            })
            .unwrap_or(false);
        if due {
            if let Err(e) = self.follow() {
                tracing::warn!(error = %e, "search index: cannot follow CURRENT; serving the open generation");
            }
        }
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The index served now.
    pub fn index(&self) -> SearchIndex {
        self.get().1
    }

    /// Switches to the generation `CURRENT` names, if it changed.
    pub fn follow(&self) -> Result<(), SearchError> {
        let name = self.root.current_name()?;
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == name {
            return Ok(());
        }
        let index = SearchIndex::open(&self.root.path_of(&name))?;
        self.install(name, index);
        Ok(())
    }

    /// Serves `index` as generation `name` in this process from now on.
    pub fn install(&self, name: String, index: SearchIndex) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (name, index);
    }

    /// Follows `CURRENT` and makes the reader see the last commit now.
    pub fn refresh(&self) -> Result<(), SearchError> {
        self.follow()?;
        self.index().refresh()
    }
}

//! The search index's layout (ADR 0013): one tantivy index of users and posts, its schema, its
//! analyzer and its checkpoint. The projector (`nova_projections::search`) writes it; the query
//! (`nova_queries::search`) reads it. Both open it through [`SearchIndex`], so the schema and the
//! analyzer that indexed a text are the ones that read it.
//!
//! The projector's checkpoint is the payload of the index's last commit ([`Positions`]): a
//! crash cannot leave index and checkpoint apart, because both are written by one commit.

use std::path::Path;

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

//! Reads of the `search` view: typo-tolerant, ranked search over the tantivy index of users and
//! posts (ADR 0013).
//!
//! Typo rules (Meilisearch's): a query word of 1–4 characters must match exactly, 5–8
//! tolerates one edit, 9 or more two; a transposition is one edit; the last word also matches
//! as a prefix (a prefix match costs nothing). Every word must match.
//!
//! How: each query word is expanded against the term dictionary with tantivy's Levenshtein
//! automaton (transposition cost one), and the edit distance of every expansion is computed
//! here ([`distance`]) — tantivy's fuzzy queries score all expansions alike. A word becomes a
//! max-disjunction over its expansions, each scored `TIER × (2 − typos) + BM25(term)`, so the
//! best expansion a document contains counts; the document's score is the sum over words.
//! With [`TIER`] above any BM25 sum, ordering by score is ordering by fewest typos, then BM25;
//! recency and the id break ties. At most [`MAX_HITS`] hits are ranked (as in Meilisearch).
//!
//! Pages: the cursor is the sort key of the last hit returned — `(typos, bm25, created_at,
//! id)` — and the next page is the hits strictly after it, so a hit is returned once.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use nova_infra::search::{words, SearchError, SearchIndex, POST, USER};
use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, DisjunctionMaxQuery, EnableScoring, Explanation, FuzzyTermQuery,
    Occur, Query, Scorer, TermQuery, Weight,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, DocId, DocSet, Score, Searcher, SegmentReader, TantivyDocument, Term};
use uuid::Uuid;

/// Longest `q` accepted, in characters.
pub const MAX_Q_CHARS: usize = 200;
/// Most hits ranked for one query; pages beyond are empty.
pub const MAX_HITS: usize = 1000;
/// Most query words used (the rest are ignored).
pub const MAX_WORDS: usize = 10;
/// Most expansions of one word (the closest, then the shortest, are kept).
pub const MAX_EXPANSIONS: usize = 64;
/// Score of one word matched without typos, above any BM25 sum.
pub const TIER: f32 = 1000.0;

/// What to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Users,
    Posts,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "users" => Some(Kind::Users),
            "posts" => Some(Kind::Posts),
            _ => None,
        }
    }
}

/// Why a search request was refused, naming the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("q must hold 1 to {MAX_Q_CHARS} characters, not only blanks")]
    Q,
    #[error("type must be users or posts")]
    Type,
    #[error("cursor is invalid; pass the next_cursor of a previous page of this search")]
    Cursor,
}

impl RequestError {
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::Q => "q",
            RequestError::Type => "type",
            RequestError::Cursor => "cursor",
        }
    }
}

/// The sort key of a hit, and the cursor of the page that ends with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchCursor {
    pub typos: u32,
    pub bm25: f32,
    pub created_at: i64,
    pub id: Uuid,
}

impl SearchCursor {
    /// Opaque text form: hex of `s1|typos|bm25 bits|created_at|id`.
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "s1|{}|{}|{}|{}",
            self.typos,
            self.bm25.to_bits(),
            self.created_at,
            self.id
        ))
    }

    pub fn decode(text: &str) -> Option<SearchCursor> {
        if text.len() > crate::cursor::MAX_CURSOR {
            return None;
        }
        let raw = String::from_utf8(hex::decode(text).ok()?).ok()?;
        let mut parts = raw.split('|');
        if parts.next()? != "s1" {
            return None;
        }
        let typos = parts.next()?.parse().ok()?;
        let bm25 = f32::from_bits(parts.next()?.parse().ok()?);
        let created_at = parts.next()?.parse().ok()?;
        let id = Uuid::parse_str(parts.next()?).ok()?;
        if parts.next().is_some() || !bm25.is_finite() {
            return None;
        }
        Some(SearchCursor {
            typos,
            bm25,
            created_at,
            id,
        })
    }

    /// Ranking order: fewest typos, highest BM25, newest, then id.
    fn cmp(&self, other: &SearchCursor) -> std::cmp::Ordering {
        self.typos
            .cmp(&other.typos)
            .then(other.bm25.total_cmp(&self.bm25))
            .then(other.created_at.cmp(&self.created_at))
            .then(self.id.cmp(&other.id))
    }
}

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// The query's words as the index analyzes them (at most [`MAX_WORDS`]).
    pub words: Vec<String>,
    /// `None` = users and posts.
    pub kind: Option<Kind>,
    pub limit: u32,
    pub after: Option<SearchCursor>,
}

impl SearchRequest {
    pub fn parse(
        q: Option<&str>,
        kind: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<SearchRequest, RequestError> {
        let q = q.ok_or(RequestError::Q)?;
        if q.trim().is_empty() || q.chars().count() > MAX_Q_CHARS {
            return Err(RequestError::Q);
        }
        let kind = kind
            .map(|k| Kind::parse(k).ok_or(RequestError::Type))
            .transpose()?;
        let after = cursor
            .map(|c| SearchCursor::decode(c).ok_or(RequestError::Cursor))
            .transpose()?;
        let mut words = words(q);
        words.truncate(MAX_WORDS);
        Ok(SearchRequest {
            words,
            kind,
            limit,
            after,
        })
    }
}

/// One hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: SearchCursor,
    pub doc: HitDoc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HitDoc {
    User {
        user_id: Uuid,
        username: String,
        display_name: Option<String>,
    },
    Post {
        post_id: Uuid,
        author_id: Uuid,
        content: String,
        created_at: DateTime<Utc>,
    },
}

/// A page of hits.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub items: Vec<Hit>,
    pub next_cursor: Option<String>,
}

/// Edits allowed for a query word of `chars` characters.
pub fn allowed_typos(chars: usize) -> u8 {
    match chars {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// Edit distance between `word` and `term` with insertions, deletions, substitutions and
/// transpositions of adjacent characters each costing one (optimal string alignment). With
/// `prefix`, the distance to the closest prefix of `term` (what search as you type matches).
pub fn distance(word: &str, term: &str, prefix: bool) -> usize {
    let a: Vec<char> = word.chars().collect();
    let b: Vec<char> = term.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    if prefix {
        d[n].iter().copied().min().unwrap_or(n)
    } else {
        d[n][m]
    }
}

/// The terms of the index's `text` field that `word` matches, with their typo counts.
fn expand(
    searcher: &Searcher,
    index: &SearchIndex,
    word: &str,
    last: bool,
) -> Result<Vec<(String, u32)>, SearchError> {
    let field = index.fields().text;
    let max = allowed_typos(word.chars().count());
    let term = Term::from_field_text(field, word);
    // Each automaton is built once, then run over every segment's term dictionary.
    let mut automata = vec![(
        FuzzyTermQuery::new(term.clone(), max, true).automaton()?,
        false,
    )];
    if last {
        automata.push((
            FuzzyTermQuery::new_prefix(term, max, true).automaton()?,
            true,
        ));
    }
    let mut found: BTreeMap<String, u32> = BTreeMap::new();
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        for (automaton, prefix) in &automata {
            let mut stream = inverted.terms().search(automaton).into_stream()?;
            while stream.advance() {
                let Ok(text) = std::str::from_utf8(stream.key()) else {
                    continue;
                };
                let typos = distance(word, text, *prefix) as u32;
                if typos > u32::from(max) {
                    continue;
                }
                let e = found.entry(text.to_owned()).or_insert(typos);
                *e = (*e).min(typos);
            }
        }
    }
    let mut terms: Vec<(String, u32)> = found.into_iter().collect();
    terms.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.len().cmp(&b.0.len())));
    terms.truncate(MAX_EXPANSIONS);
    Ok(terms)
}

/// A term's BM25 plus a constant: one expansion of a query word, scored `tier + BM25` while
/// reading its posting list once (a boolean of a constant-score and a scoring clause over the
/// same term reads it twice and intersects the two).
#[derive(Debug, Clone)]
struct Plus {
    inner: TermQuery,
    plus: Score,
}

impl Query for Plus {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(PlusWeight {
            inner: self.inner.weight(enable_scoring)?,
            plus: self.plus,
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.inner.query_terms(visitor);
    }
}

struct PlusWeight {
    inner: Box<dyn Weight>,
    plus: Score,
}

impl Weight for PlusWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(PlusScorer {
            inner: self.inner.scorer(reader, boost)?,
            plus: self.plus,
        }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let inner = self.inner.explain(reader, doc)?;
        let mut e = Explanation::new("tier + BM25", inner.value() + self.plus);
        e.add_const("tier", self.plus);
        e.add_detail(inner);
        Ok(e)
    }
}

struct PlusScorer {
    inner: Box<dyn Scorer>,
    plus: Score,
}

impl DocSet for PlusScorer {
    fn advance(&mut self) -> DocId {
        self.inner.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.inner.seek(target)
    }

    fn doc(&self) -> DocId {
        self.inner.doc()
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        self.inner.cost()
    }
}

impl Scorer for PlusScorer {
    fn score(&mut self) -> Score {
        self.inner.score() + self.plus
    }
}

fn filter(query: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(query, 0.0))
}

/// A page of hits for `req`, hiding the posts of `hidden_authors` (the reader's blocks).
pub fn search(
    index: &SearchIndex,
    req: &SearchRequest,
    hidden_authors: &HashSet<Uuid>,
) -> Result<SearchPage, SearchError> {
    let empty = SearchPage {
        items: Vec::new(),
        next_cursor: None,
    };
    if req.words.is_empty() {
        return Ok(empty);
    }
    let f = index.fields();
    let searcher = index.reader().searcher();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let kinds: Vec<&str> = match req.kind {
        Some(Kind::Users) => vec![USER],
        Some(Kind::Posts) => vec![POST],
        None => vec![USER, POST],
    };
    let kind_terms: Vec<(Occur, Box<dyn Query>)> = kinds
        .iter()
        .map(|k| {
            let q: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(f.kind, k),
                IndexRecordOption::Basic,
            ));
            (Occur::Should, q)
        })
        .collect();
    clauses.push((Occur::Must, filter(Box::new(BooleanQuery::new(kind_terms)))));
    for author in hidden_authors {
        clauses.push((
            Occur::MustNot,
            Box::new(TermQuery::new(
                Term::from_field_text(f.author, &author.to_string()),
                IndexRecordOption::Basic,
            )),
        ));
    }
    let last = req.words.len() - 1;
    for (i, word) in req.words.iter().enumerate() {
        let terms = expand(&searcher, index, word, i == last)?;
        if terms.is_empty() {
            return Ok(empty);
        }
        let disjuncts: Vec<Box<dyn Query>> = terms
            .into_iter()
            .map(|(text, typos)| {
                let term = Term::from_field_text(f.text, &text);
                let tier = TIER * (2 - typos.min(2)) as f32;
                let q: Box<dyn Query> = Box::new(Plus {
                    inner: TermQuery::new(term, IndexRecordOption::WithFreqs),
                    plus: tier,
                });
                q
            })
            .collect();
        clauses.push((Occur::Must, Box::new(DisjunctionMaxQuery::new(disjuncts))));
    }
    let query = BooleanQuery::new(clauses);
    let top = searcher.search(&query, &TopDocs::with_limit(MAX_HITS).order_by_score())?;
    let words = req.words.len() as u32;
    let mut hits: Vec<(SearchCursor, DocAddress)> = Vec::with_capacity(top.len());
    let mut columns = BTreeMap::new();
    for (score, addr) in top {
        if let std::collections::btree_map::Entry::Vacant(slot) = columns.entry(addr.segment_ord) {
            let fast = searcher.segment_reader(addr.segment_ord).fast_fields();
            slot.insert((
                fast.i64("created_at")?.first_or_default_col(0),
                fast.u64("id_hi")?.first_or_default_col(0),
                fast.u64("id_lo")?.first_or_default_col(0),
            ));
        }
        let Some((created, hi, lo)) = columns.get(&addr.segment_ord) else {
            continue;
        };
        let tiers = (score / TIER).floor().clamp(0.0, (2 * words) as f32);
        let key = SearchCursor {
            typos: 2 * words - tiers as u32,
            bm25: score - tiers * TIER,
            created_at: created.get_val(addr.doc_id),
            id: Uuid::from_u64_pair(hi.get_val(addr.doc_id), lo.get_val(addr.doc_id)),
        };
        hits.push((key, addr));
    }
    hits.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(after) = &req.after {
        hits.retain(|(k, _)| k.cmp(after).is_gt());
    }
    let more = hits.len() > req.limit as usize;
    hits.truncate(req.limit as usize);
    let mut items = Vec::with_capacity(hits.len());
    for (key, addr) in hits {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let hit = if text(f.author).is_some() {
            HitDoc::Post {
                post_id: key.id,
                author_id: text(f.author)
                    .and_then(|a| Uuid::parse_str(&a).ok())
                    .unwrap_or_default(),
                content: text(f.content).unwrap_or_default(),
                created_at: DateTime::from_timestamp_micros(key.created_at).unwrap_or_default(),
            }
        } else {
            HitDoc::User {
                user_id: key.id,
                username: text(f.username).unwrap_or_default(),
                display_name: text(f.display_name),
            }
        };
        items.push(Hit { key, doc: hit });
    }
    let next_cursor = if more {
        items.last().map(|h| h.key.encode())
    } else {
        None
    };
    Ok(SearchPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_a_transposition_as_one_edit_and_prefixes_as_free() {
        assert_eq!(distance("hello", "hello", false), 0);
        assert_eq!(distance("hlelo", "hello", false), 1);
        assert_eq!(distance("helo", "hello", false), 1);
        assert_eq!(distance("hallo", "hello", false), 1);
        assert_eq!(distance("hel", "hello", true), 0);
        assert_eq!(distance("hlel", "hello", true), 1);
        assert_eq!(allowed_typos(4), 0);
        assert_eq!(allowed_typos(5), 1);
        assert_eq!(allowed_typos(8), 1);
        assert_eq!(allowed_typos(9), 2);
    }

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let c = SearchCursor {
            typos: 1,
            bm25: 3.25,
            created_at: 1_700_000_000_000_000,
            id: Uuid::now_v7(),
        };
        assert_eq!(SearchCursor::decode(&c.encode()), Some(c));
        for bad in ["", "zz", "7c", &"a".repeat(300), &hex::encode("s1|1|2|3")] {
            assert_eq!(SearchCursor::decode(bad), None, "{bad}");
        }
    }
}

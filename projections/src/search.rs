//! `search`: the tantivy index of users and posts (ADR 0013). Not an SQL projection: it has
//! its own small runtime over the same [`EventSource`]s, because its checkpoint lives in the
//! index commit itself (the commit payload, [`Positions`]) — index and checkpoint cannot
//! disagree after a crash, and an event at or below the checkpoint is skipped.
//!
//! What is indexed: active users (username and display name) and the visible posts of active
//! authors (content). An edit re-indexes (delete by id term + add); a delete or hide removes;
//! a deactivation removes the user, deletes the author's posts by the `author` term and leaves
//! an `inactive` marker document, so a post event applied after the deactivation (the user and
//! post domains are not ordered with each other) is not indexed either.
//!
//! After each commit the positions are mirrored into `projection_checkpoints` (for
//! `nova projections status` and for API processes waiting on `X-Nova-Min-Position`) and
//! published to the in-process [`Checkpoints`]; on restart the index payload alone counts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nova_event_schemas::personal::is_erased;
use nova_event_schemas::post::PostEvent;
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::search::{
    LiveIndex, Positions, SearchError, SearchIndex, SearchRoot, INACTIVE, POST, USER,
};
use nova_infra::store::{EventStore, RecordedEvent};
use sqlx::AnyPool;
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{IndexWriter, TantivyDocument, Term};
use tokio::sync::watch;
use uuid::Uuid;

use crate::rebuild::{Lease, Progress, RebuildError, Report};
use crate::{Checkpoints, EventSource, ProjectionError, StoreTail};

pub const NAME: &str = "search";
pub const DOMAINS: &[Domain] = &[Domain::User, Domain::Post];

/// Memory the writer may use before it flushes a segment (tantivy's budget is split across
/// its indexing threads; one thread here).
pub const WRITER_MEMORY: usize = 32_000_000;
const BATCH: i64 = 500;

/// The projector's state: the writer (it holds the index's writer lock), the positions of the
/// last commit plus what the open batch applied, and the deactivated authors.
pub struct SearchProjector {
    index: SearchIndex,
    writer: IndexWriter,
    positions: Positions,
    inactive: HashSet<Uuid>,
    /// Documents added or removed since the last commit (not visible to the searcher yet),
    /// so that an edit in the same batch as its post's creation finds the post.
    pending: HashMap<Uuid, Option<TantivyDocument>>,
    /// The generation this projector writes (empty for an index outside a [`SearchRoot`]).
    generation: String,
    /// A person was erased in the open batch: after its commit every segment is merged and
    /// unused files are deleted, so the deleted documents' bytes leave the directory (ADR
    /// 0025); a delete alone only marks them.
    purge: bool,
}

impl From<SearchError> for ProjectionError {
    fn from(e: SearchError) -> Self {
        ProjectionError::Search(e)
    }
}

impl From<SearchError> for RebuildError {
    fn from(e: SearchError) -> Self {
        RebuildError::Projection(e.into())
    }
}

impl From<tantivy::TantivyError> for RebuildError {
    fn from(e: tantivy::TantivyError) -> Self {
        RebuildError::Projection(e.into())
    }
}

impl From<tantivy::TantivyError> for ProjectionError {
    fn from(e: tantivy::TantivyError) -> Self {
        ProjectionError::Search(e.into())
    }
}

fn uuid_of(doc: &TantivyDocument, field: tantivy::schema::Field) -> Option<Uuid> {
    doc.get_first(field)
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
}

impl SearchProjector {
    /// Takes the index's writer (fails while another process holds it) and reads the
    /// checkpoint and the deactivated authors from the last commit.
    pub fn open(index: SearchIndex) -> Result<SearchProjector, ProjectionError> {
        let writer: IndexWriter = index.index().writer_with_num_threads(1, WRITER_MEMORY)?;
        // The default log merge policy keeps the segment count logarithmic under a trickle of
        // small commits; merges run on the writer's background thread.
        writer.set_merge_policy(Box::new(tantivy::merge_policy::LogMergePolicy::default()));
        index.refresh()?;
        let positions = index.positions()?;
        let fields = index.fields();
        let searcher = index.reader().searcher();
        let query = TermQuery::new(
            Term::from_field_text(fields.kind, INACTIVE),
            IndexRecordOption::Basic,
        );
        let mut inactive = HashSet::new();
        for addr in searcher.search(&query, &DocSetCollector)? {
            let doc: TantivyDocument = searcher.doc(addr)?;
            if let Some(id) = uuid_of(&doc, fields.author) {
                inactive.insert(id);
            }
        }
        Ok(SearchProjector {
            index,
            writer,
            positions,
            inactive,
            pending: HashMap::new(),
            generation: String::new(),
            purge: false,
        })
    }

    /// The positions applied so far (committed or not).
    pub fn positions(&self) -> Positions {
        self.positions
    }

    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    /// The current document of `id`: this batch's, else the last commit's.
    fn current(&self, id: Uuid) -> Result<Option<TantivyDocument>, ProjectionError> {
        if let Some(doc) = self.pending.get(&id) {
            return Ok(doc.clone());
        }
        let fields = self.index.fields();
        let searcher = self.index.reader().searcher();
        let query = TermQuery::new(
            Term::from_field_text(fields.id, &id.to_string()),
            IndexRecordOption::Basic,
        );
        match searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())?
            .first()
        {
            Some((_, addr)) => Ok(Some(searcher.doc(*addr)?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, id: Uuid, doc: TantivyDocument) -> Result<(), ProjectionError> {
        let fields = self.index.fields();
        self.writer
            .delete_term(Term::from_field_text(fields.id, &id.to_string()));
        self.writer.add_document(doc.clone())?;
        self.pending.insert(id, Some(doc));
        Ok(())
    }

    fn remove(&mut self, id: Uuid) {
        let fields = self.index.fields();
        self.writer
            .delete_term(Term::from_field_text(fields.id, &id.to_string()));
        self.pending.insert(id, None);
    }

    fn user_doc(
        &self,
        id: Uuid,
        username: &str,
        display_name: Option<&str>,
        registered_at: i64,
    ) -> TantivyDocument {
        let f = self.index.fields();
        let mut doc = TantivyDocument::default();
        let (hi, lo) = id.as_u64_pair();
        doc.add_u64(f.id_hi, hi);
        doc.add_u64(f.id_lo, lo);
        doc.add_i64(f.created_at, registered_at);
        doc.add_text(f.kind, USER);
        doc.add_text(f.id, id.to_string());
        doc.add_text(f.text, username);
        doc.add_text(f.username, username);
        if let Some(name) = display_name {
            doc.add_text(f.text, name);
            doc.add_text(f.display_name, name);
        }
        doc
    }

    fn post_doc(&self, id: Uuid, author: Uuid, content: &str, created_at: i64) -> TantivyDocument {
        let f = self.index.fields();
        let mut doc = TantivyDocument::default();
        let (hi, lo) = id.as_u64_pair();
        doc.add_u64(f.id_hi, hi);
        doc.add_u64(f.id_lo, lo);
        doc.add_text(f.kind, POST);
        doc.add_text(f.id, id.to_string());
        doc.add_text(f.author, author.to_string());
        doc.add_text(f.text, content);
        doc.add_text(f.content, content);
        doc.add_i64(f.created_at, created_at);
        doc
    }

    /// Applies one event; an event at or below the domain's position is a no-op.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.position <= self.positions.of(event.domain) {
            return Ok(());
        }
        match event.domain {
            Domain::User => self.apply_user(event)?,
            Domain::Post => self.apply_post(event)?,
            _ => {}
        }
        self.positions.set(event.domain, event.position);
        Ok(())
    }

    fn apply_user(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let f = self.index.fields();
        match event.decode::<UserEvent>()? {
            // An erased person has no document, whether the index learns of the erasure from
            // `user.erased` (live) or from history that already reads as erased (rebuild).
            UserEvent::Registered(e) if is_erased(&e.username) => {}
            UserEvent::ProfileUpdated(e) if e.display_name.as_deref().is_some_and(is_erased) => {}
            UserEvent::Erased(e) => {
                self.drop_author(e.user_id);
                self.purge = true;
            }
            UserEvent::Registered(e) if !self.inactive.contains(&e.user_id) => {
                let doc = self.user_doc(
                    e.user_id,
                    &e.username,
                    e.display_name.as_deref(),
                    e.registered_at.timestamp_micros(),
                );
                self.put(e.user_id, doc)?;
            }
            UserEvent::ProfileUpdated(e) => {
                let id = event.aggregate_id;
                if let Some(old) = self.current(id)? {
                    let username = old
                        .get_first(f.username)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let registered = old
                        .get_first(f.created_at)
                        .and_then(|v| v.as_i64())
                        .unwrap_or_default();
                    let doc = self.user_doc(id, &username, e.display_name.as_deref(), registered);
                    self.put(id, doc)?;
                }
            }
            UserEvent::Deactivated(_) => {
                let id = event.aggregate_id;
                self.drop_author(id);
                let author = id.to_string();
                // The marker's id term differs from the user's, so no later event of the user
                // deletes it; `open` reads the author field back.
                let mut marker = TantivyDocument::default();
                marker.add_text(f.kind, INACTIVE);
                marker.add_text(f.id, format!("inactive:{id}"));
                marker.add_text(f.author, author);
                self.writer.add_document(marker)?;
                self.inactive.insert(id);
            }
            _ => {}
        }
        Ok(())
    }

    /// Removes the user's document and every post of theirs (committed or in this batch).
    fn drop_author(&mut self, id: Uuid) {
        let f = self.index.fields();
        self.remove(id);
        self.writer
            .delete_term(Term::from_field_text(f.author, &id.to_string()));
        // Posts of this author added earlier in the open batch are gone too.
        let author = id.to_string();
        for doc in self.pending.values_mut() {
            if doc
                .as_ref()
                .is_some_and(|d| d.get_first(f.author).and_then(|v| v.as_str()) == Some(&author))
            {
                *doc = None;
            }
        }
    }

    fn apply_post(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let f = self.index.fields();
        match event.decode::<PostEvent>()? {
            PostEvent::Created(e) if is_erased(&e.content) => {}
            PostEvent::Edited(e) if is_erased(&e.content) => {}
            PostEvent::Created(e) if !self.inactive.contains(&e.author_id) => {
                let doc = self.post_doc(
                    e.post_id,
                    e.author_id,
                    &e.content,
                    e.created_at.timestamp_micros(),
                );
                self.put(e.post_id, doc)?;
            }
            PostEvent::Edited(e) => {
                let id = event.aggregate_id;
                if let Some(old) = self.current(id)? {
                    let author = uuid_of(&old, f.author);
                    let created = old.get_first(f.created_at).and_then(|v| v.as_i64());
                    if let (Some(author), Some(created)) = (author, created) {
                        if !self.inactive.contains(&author) {
                            let doc = self.post_doc(id, author, &e.content, created);
                            self.put(id, doc)?;
                        }
                    }
                }
            }
            PostEvent::Deleted(_) | PostEvent::Hidden(_) => self.remove(event.aggregate_id),
            _ => {}
        }
        Ok(())
    }

    /// Commits what was applied, with the positions as the commit payload, and makes the
    /// reader see it.
    pub fn commit(&mut self) -> Result<(), ProjectionError> {
        let payload = serde_json::to_string(&self.positions)
            .map_err(|e| SearchError(format!("positions do not encode: {e}")))?;
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.pending.clear();
        self.index.refresh()?;
        if std::mem::take(&mut self.purge) {
            self.purge_deleted()?;
        }
        Ok(())
    }

    /// Rewrites every segment without its deleted documents and deletes the files no commit
    /// uses any more: after an erasure, what the index held of the person is gone from disk,
    /// not only marked deleted.
    fn purge_deleted(&mut self) -> Result<(), ProjectionError> {
        let segments = self.index.index().searchable_segment_ids()?;
        if !segments.is_empty() {
            self.writer.merge(&segments).wait()?;
        }
        self.index.refresh()?;
        self.writer.garbage_collect_files().wait()?;
        Ok(())
    }
}

/// Opens a projector on `index` off the async threads (taking the writer lock and reading the
/// last commit block).
async fn open_projector(index: SearchIndex) -> Result<SearchProjector, ProjectionError> {
    tokio::task::spawn_blocking(move || SearchProjector::open(index))
        .await
        .map_err(|e| SearchError(format!("projector task failed: {e}")))?
}

/// Opens a projector on the generation served now. The writer lock is taken first and
/// `CURRENT` read again after: a rebuild that promoted its generation while holding the old
/// one's lock is then seen, and this projector never writes to a generation nobody serves.
async fn open_current(live: &LiveIndex) -> Result<SearchProjector, ProjectionError> {
    live.follow()?;
    let (generation, index) = live.get();
    let mut projector = open_projector(index).await?;
    if live.root().current_name()? != generation {
        return Err(
            SearchError("the served generation changed while opening; retrying".into()).into(),
        );
    }
    projector.generation = generation;
    // Generations left by earlier rebuilds (and by processes that raced to create the
    // first one) go now that this projector owns the served one.
    live.root().sweep()?;
    Ok(projector)
}

/// Applies the next batch of `domain` and commits it. Returns whether anything was applied.
pub async fn project_once(
    projector: &mut Option<SearchProjector>,
    live: &LiveIndex,
    domain: Domain,
    source: &dyn EventSource,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
) -> Result<bool, ProjectionError> {
    let mut state = match projector.take() {
        Some(p) => p,
        None => open_current(live).await?,
    };
    publish(&state, checkpoints);
    let after = state.positions().of(domain);
    let events = source.next_batch(domain, after, BATCH).await?;
    if events.is_empty() {
        *projector = Some(state);
        return Ok(false);
    }
    let applied = events.iter().filter(|e| e.position > after).count() as u64;
    // The writer blocks (a commit fsyncs): off the async threads. On failure the state is
    // dropped (releasing the writer lock and discarding the uncommitted batch) and reopened
    // from the last commit next time.
    let state = tokio::task::spawn_blocking(move || {
        for event in &events {
            state.apply(event)?;
        }
        state.commit()?;
        Ok::<_, ProjectionError>(state)
    })
    .await
    .map_err(|e| SearchError(format!("projector task failed: {e}")))??;
    let position = state.positions().of(domain);
    mirror(pool, state.positions()).await?;
    publish(&state, checkpoints);
    *projector = Some(state);
    metrics::counter!("nova_projection_applied_events_total",
        "projection" => NAME, "domain" => domain.as_str())
    .increment(applied);
    source.acknowledge(domain, position).await;
    Ok(true)
}

fn publish(state: &SearchProjector, checkpoints: &Checkpoints) {
    for &domain in DOMAINS {
        checkpoints.publish(NAME, domain, state.positions().of(domain));
    }
}

/// Mirrors the committed positions into `projection_checkpoints` (status and other processes'
/// read-your-writes waits read it; the index payload stays the source of truth).
pub async fn mirror(pool: &AnyPool, positions: Positions) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    for &domain in DOMAINS {
        Checkpoints::save_in(&mut tx, NAME, domain, positions.of(domain)).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Applies every event of the store after the projector's positions, batch by batch, and
/// commits once. `progress` sees each batch; a rebuild's lease is renewed after each.
async fn fill(
    mut projector: SearchProjector,
    store: &EventStore,
    progress: &(dyn Fn(Progress) + Sync),
    lease: Option<(&Lease, &AnyPool)>,
) -> Result<SearchProjector, RebuildError> {
    let source = StoreTail::new(store.clone());
    for &domain in DOMAINS {
        loop {
            let after = projector.positions().of(domain);
            let events = source
                .next_batch(domain, after, BATCH)
                .await
                .map_err(ProjectionError::from)?;
            if events.is_empty() {
                break;
            }
            projector = tokio::task::spawn_blocking(move || {
                for event in &events {
                    projector.apply(event)?;
                }
                Ok::<_, ProjectionError>(projector)
            })
            .await
            .map_err(|e| SearchError(format!("search task failed: {e}")))??;
            progress(Progress {
                domain,
                position: projector.positions().of(domain),
                head: store.head(domain).await.map_err(ProjectionError::from)?,
            });
            if let Some((lease, pool)) = lease {
                lease.renew(pool).await?;
            }
        }
    }
    Ok(tokio::task::spawn_blocking(move || {
        projector.commit()?;
        Ok::<_, ProjectionError>(projector)
    })
    .await
    .map_err(|e| SearchError(format!("search task failed: {e}")))??)
}

/// Takes over the proposed generation `name`: catches it up from the store (to at least where
/// the served one stands, since the store's head is never behind it), promotes it, and serves
/// it in this process. The served generation keeps answering until the promotion.
async fn take_over(
    live: &LiveIndex,
    name: &str,
    dir: &Path,
    store: &EventStore,
) -> Result<SearchProjector, ProjectionError> {
    let index = SearchIndex::open(dir)?;
    let projector = open_projector(index.clone()).await?;
    let mut projector = fill(projector, store, &|_| {}, None)
        .await
        .map_err(|e| SearchError(e.to_string()))?;
    live.root().promote(name)?;
    live.install(name.to_owned(), index);
    projector.generation = name.to_owned();
    live.root().sweep()?;
    tracing::info!(
        projection = NAME,
        generation = name,
        "search: rebuilt generation now served"
    );
    Ok(projector)
}

/// How long an idle projector waits before it looks for a proposed generation again.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Runs the search projector over both its domains until `stop` flips to true. `source` gives
/// the events (the store tail, or this process's JetStream consumers); `store` fills a rebuilt
/// generation before it is taken over.
pub async fn run(
    live: LiveIndex,
    source: Arc<dyn EventSource>,
    store: EventStore,
    pool: AnyPool,
    checkpoints: Checkpoints,
    mut stop: watch::Receiver<bool>,
) {
    let mut projector: Option<SearchProjector> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let mut progressed = false;
        let mut failed = None;
        match live.root().proposed() {
            Ok(Some((name, dir))) => {
                // Release the served generation's writer: the one proposed replaces it.
                projector = None;
                match take_over(&live, &name, &dir, &store).await {
                    Ok(p) => {
                        publish(&p, &checkpoints);
                        if let Err(e) = mirror(&pool, p.positions()).await {
                            failed = Some(e);
                        }
                        projector = Some(p);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            Ok(None) => {}
            Err(e) => failed = Some(e.into()),
        }
        // Another process promoted a generation (a rebuild that found no projector running,
        // racing this one's start): serve and write that one.
        if let Some(p) = &projector {
            match live.root().current_name() {
                Ok(name) if name != p.generation => projector = None,
                Ok(_) => {}
                Err(e) => failed = Some(e.into()),
            }
        }
        if failed.is_none() {
            for &domain in DOMAINS {
                match project_once(&mut projector, &live, domain, &*source, &pool, &checkpoints)
                    .await
                {
                    Ok(p) => progressed |= p,
                    Err(e) => failed = Some(e),
                }
            }
        }
        if let Some(e) = failed {
            tracing::warn!(projection = NAME, error = %e, "search projector failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);
        if !progressed {
            let seen = |d| checkpoints.cached(NAME, d);
            tokio::select! {
                _ = source.wait_for_more(Domain::User, seen(Domain::User)) => {}
                _ = source.wait_for_more(Domain::Post, seen(Domain::Post)) => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Catches the served generation up to the head of both domains from the store (tests).
pub async fn catch_up(
    live: &LiveIndex,
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
) -> Result<(), ProjectionError> {
    let source = StoreTail::new(store.clone());
    let mut projector = None;
    for &domain in DOMAINS {
        while project_once(&mut projector, live, domain, &source, pool, checkpoints).await? {}
    }
    Ok(())
}

/// Builds a fresh index of the store's events in `dir` (which must not hold an index yet) and
/// returns its positions. Nothing served is touched.
pub async fn rebuild_into(dir: &Path, store: &EventStore) -> Result<Positions, ProjectionError> {
    let projector = open_projector(SearchIndex::open(dir)?).await?;
    Ok(fill(projector, store, &|_| {}, None)
        .await
        .map_err(|e| SearchError(e.to_string()))?
        .positions())
}

/// How long a rebuild waits for the live projector to take its generation over.
pub const TAKE_OVER_WAIT: Duration = Duration::from_secs(120);

/// Zero-downtime rebuild of the index under `root` (ADR 0013): a new generation is built from
/// the store beside the served one, which keeps answering; then it is proposed. A live
/// projector (this process's or another's on this host) takes it over — catches it up,
/// promotes it, serves it — and this call waits for that. When no projector holds the served
/// generation, the rebuild promotes its generation itself, under that generation's writer
/// lock, so a projector starting meanwhile opens the new one.
///
/// Holds `lease` (the projection's one-at-a-time rebuild lease) and releases it at the end,
/// done or failed.
pub async fn rebuild_leased(
    lease: Lease,
    root: &SearchRoot,
    store: &EventStore,
    pool: &AnyPool,
    progress: impl Fn(Progress) + Sync,
) -> Result<Report, RebuildError> {
    let result = rebuild_holding(&lease, root, store, pool, &progress).await;
    lease.release(pool).await;
    result
}

async fn rebuild_holding(
    lease: &Lease,
    root: &SearchRoot,
    store: &EventStore,
    pool: &AnyPool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, RebuildError> {
    let started = std::time::Instant::now();
    // A rebuild that died (kill -9, a full disk) left its build behind; the lease says none runs.
    for name in root.sweep_builds()? {
        tracing::info!(build = %name, "removed the build of an earlier rebuild that did not finish");
    }
    let dir = root.start_build()?;
    let projector = open_projector(SearchIndex::open(&dir)?).await?;
    // Dropping the projector releases the new generation's writer for whoever takes it over.
    drop(fill(projector, store, progress, Some((lease, pool))).await?);
    let name = root.propose(&dir)?;

    let served = SearchIndex::open(&root.current()?)?;
    let lock = served
        .index()
        .writer_with_num_threads::<TantivyDocument>(1, 15_000_000);
    let positions = match lock {
        Ok(served_writer) => {
            // No projector runs: finish the take-over here, holding the served writer lock.
            let projector = open_projector(SearchIndex::open(&root.dir().join(&name))?).await?;
            let projector = fill(projector, store, progress, Some((lease, pool))).await?;
            root.promote(&name)?;
            drop(served_writer);
            root.sweep()?;
            mirror(pool, projector.positions()).await?;
            projector.positions()
        }
        Err(tantivy::TantivyError::LockFailure(..)) => {
            let deadline = std::time::Instant::now() + TAKE_OVER_WAIT;
            loop {
                if root.current_name()? == name {
                    break;
                }
                if root.proposed()?.map(|(n, _)| n) != Some(name.clone()) {
                    return Err(SearchError(format!(
                        "generation {name} was withdrawn: another rebuild proposed a newer one"
                    ))
                    .into());
                }
                if std::time::Instant::now() > deadline {
                    return Err(SearchError(format!(
                        "the live projector did not take generation {name} over within {}s; \
                         it stays proposed and is taken over when the projector next runs",
                        TAKE_OVER_WAIT.as_secs()
                    ))
                    .into());
                }
                lease.renew(pool).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let served = SearchIndex::open(&root.dir().join(&name))?;
            served.positions()?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Report {
        projection: NAME.to_owned(),
        positions: DOMAINS.iter().map(|&d| (d, positions.of(d))).collect(),
        resumed: false,
        seconds: started.elapsed().as_secs_f64(),
    })
}

//! The model worker: one thread owns the model's time, and packs concurrent requests into shared
//! batches.
//!
//! Requests are queued in a bounded channel (full = 429, never an unbounded backlog). The worker
//! takes the oldest request, then lets others join it for up to the batch wait (counted from the
//! first one's arrival, so a busy server adds no wait) while the batch stays under its token and
//! request caps. For rerankers that read precomputed document states (sieve's late-joined model),
//! the documents of every request in the batch go through the towers together: one length-sorted,
//! token-budgeted pass, documents seen before served from the [`StateCache`], duplicates across
//! requests computed once. Then all the batch's queries run as one [`Reranker::rerank_many`]
//! call: one query-tower call, and each joint block over every request's pairs in shared,
//! length-sorted batches. Results are routed back to each request. Requests whose client went
//! away, or whose deadline passed, are dropped before any work is spent on them.
//!
//! With int8 joint blocks (the CPU default), activations are quantised per batch tensor, so a
//! request's scores move slightly (≈1e-3) with its batch companions, as they already do with the
//! other documents of its window; one request per batch or fp32 blocks make answers independent.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sieve::{
    Budget, DocStates, RerankDoc, RerankError, RerankOutput, RerankQuery, Reranker, SearchRequest,
    SearchResponse, Sieve, SieveError,
};
use tokio::sync::oneshot;

use crate::cache::{DocKey, StateCache, doc_key};
use crate::config::ServeConfig;
use crate::error::{ApiError, ErrorKind};
use crate::metrics::Metrics;
use crate::text::Document;

/// A rerank request waiting for the model.
pub struct RerankJob {
    /// The query.
    pub query: String,
    /// The documents, already cut to the protocol's limits.
    pub docs: Vec<Document>,
    /// How much of the model to spend.
    pub budget: Budget,
    /// When the request gives up.
    pub deadline: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Scored, ApiError>>,
}

/// A reranked request.
#[derive(Debug)]
pub struct Scored {
    /// One score per document, in input order, with the model's statistics.
    pub output: RerankOutput,
    /// Requests that shared this one's batch (itself included).
    pub batch_requests: usize,
    /// Milliseconds spent waiting in the queue.
    pub queue_ms: f64,
}

/// A `/search` waiting for the model.
pub struct SearchJob {
    /// The search.
    pub request: SearchRequest,
    /// When the request gives up.
    pub deadline: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<SearchResponse, ApiError>>,
}

enum Work {
    Rerank(RerankJob, Instant),
    Search(SearchJob, Instant),
}

/// The handle the HTTP layer submits work through.
pub struct Batcher {
    queue: Mutex<Option<SyncSender<Work>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

struct Worker {
    reranker: Arc<dyn Reranker>,
    engine: Option<Arc<Sieve>>,
    /// When the index on disk was last checked for a newer generation.
    engine_checked: Instant,
    metrics: Arc<Metrics>,
    cache: StateCache,
    batch_wait: Duration,
    max_batch_tokens: usize,
    max_batch_requests: usize,
}

impl Batcher {
    /// Starts the model worker thread.
    pub fn start(
        reranker: Arc<dyn Reranker>,
        engine: Option<Arc<Sieve>>,
        config: &ServeConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(config.max_queue);
        let worker = Worker {
            reranker,
            engine,
            engine_checked: Instant::now(),
            metrics: metrics.clone(),
            cache: StateCache::new(config.state_cache_bytes),
            batch_wait: config.batch_wait,
            max_batch_tokens: config.max_batch_tokens,
            max_batch_requests: config.max_batch_requests,
        };
        let handle = std::thread::Builder::new()
            .name("sieve-model".into())
            .spawn(move || worker.run(rx))?;
        Ok(Self {
            queue: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(handle)),
            metrics,
        })
    }

    fn submit(&self, work: Work) -> Result<(), ApiError> {
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = guard.as_ref() else {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        };
        // Count before sending so that the worker's decrement can never go below zero.
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        match queue.try_send(work) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                match error {
                    TrySendError::Full(_) => {
                        self.metrics
                            .rejected_overload
                            .fetch_add(1, Ordering::Relaxed);
                        Err(ApiError::new(
                            ErrorKind::Overloaded,
                            "Model is overloaded: the request queue is full, try again later",
                        ))
                    }
                    TrySendError::Disconnected(_) => Err(ApiError::new(
                        ErrorKind::Unavailable,
                        "the model worker has stopped",
                    )),
                }
            }
        }
    }

    /// Queues a rerank request (429 at once when the queue is full).
    pub fn rerank(&self, job: RerankJob) -> Result<(), ApiError> {
        self.submit(Work::Rerank(job, Instant::now()))
    }

    /// Queues a search (429 at once when the queue is full).
    pub fn search(&self, job: SearchJob) -> Result<(), ApiError> {
        self.submit(Work::Search(job, Instant::now()))
    }

    /// Stops taking work, lets the worker finish what is queued and waits for it.
    pub fn shutdown(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn rerank_error(error: RerankError) -> ApiError {
    match error {
        RerankError::Invalid(message) => ApiError::invalid(message),
        other => ApiError::new(ErrorKind::Backend, other.to_string()),
    }
}

fn seconds_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

impl Worker {
    fn run(mut self, rx: Receiver<Work>) {
        let mut held: Option<Work> = None;
        loop {
            let first = match held.take() {
                Some(work) => work,
                None => match rx.recv() {
                    Ok(work) => {
                        self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                        work
                    }
                    Err(_) => return, // every sender dropped: shut down
                },
            };
            let (job, arrived) = match first {
                Work::Search(job, arrived) => {
                    self.follow_index_updates();
                    self.search(job, arrived);
                    continue;
                }
                Work::Rerank(job, arrived) => (job, arrived),
            };
            let mut tokens: usize = job.docs.iter().map(|d| d.tokens).sum();
            let mut group = vec![(job, arrived)];
            let window_ends = arrived + self.batch_wait;
            while group.len() < self.max_batch_requests && tokens < self.max_batch_tokens {
                let wait = window_ends.saturating_duration_since(Instant::now());
                let next = if wait.is_zero() {
                    rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
                } else {
                    rx.recv_timeout(wait)
                };
                match next {
                    Ok(work) => {
                        self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                        match work {
                            Work::Rerank(job, arrived) => {
                                tokens += job.docs.iter().map(|d| d.tokens).sum::<usize>();
                                group.push((job, arrived));
                            }
                            search @ Work::Search(..) => {
                                held = Some(search);
                                break;
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
            self.rerank_group(group);
        }
    }

    /// Whether a queued job should still run; answers it if not.
    fn still_wanted<T>(
        &self,
        reply: &oneshot::Sender<Result<T, ApiError>>,
        deadline: Instant,
    ) -> bool {
        if reply.is_closed() {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if Instant::now() >= deadline {
            self.metrics.timed_out.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn rerank_group(&mut self, group: Vec<(RerankJob, Instant)>) {
        let mut live = Vec::with_capacity(group.len());
        for (job, arrived) in group {
            if self.still_wanted(&job.reply, job.deadline) {
                self.metrics.record_stage("queue", seconds_since(arrived));
                live.push((job, arrived));
            } else if !job.reply.is_closed() {
                let _ = job.reply.send(Err(timeout()));
            }
        }
        if live.is_empty() {
            return;
        }
        let documents: usize = live.iter().map(|(j, _)| j.docs.len()).sum();
        self.metrics.record_batch(live.len(), documents);
        let states = match self.group_states(&live) {
            Ok(states) => states,
            Err(error) => {
                for (job, _) in live {
                    let _ = job.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        // Drop what went stale while the towers ran; the rest run as one multi-query call.
        let mut ready = Vec::with_capacity(live.len());
        for (job, arrived) in live {
            if self.still_wanted(&job.reply, job.deadline) {
                ready.push((job, arrived));
            } else if !job.reply.is_closed() {
                let _ = job.reply.send(Err(timeout()));
            }
        }
        if ready.is_empty() {
            return;
        }
        let batch_requests = ready.len();
        let docs: Vec<Vec<RerankDoc<'_>>> = ready
            .iter()
            .map(|(job, _)| {
                job.docs
                    .iter()
                    .map(|d| RerankDoc {
                        states: states.get(&doc_key(&d.title, &d.text)).map(Arc::as_ref),
                        ..RerankDoc::new(&d.title, &d.text)
                    })
                    .collect()
            })
            .collect();
        let queries: Vec<RerankQuery<'_>> = ready
            .iter()
            .zip(&docs)
            .map(|((job, _), docs)| RerankQuery {
                query: &job.query,
                docs,
                budget: &job.budget,
            })
            .collect();
        let started = Instant::now();
        let reranker = &self.reranker;
        let outcomes =
            std::panic::catch_unwind(AssertUnwindSafe(|| reranker.rerank_many(&queries)))
                .unwrap_or_else(|_| {
                    queries
                        .iter()
                        .map(|_| {
                            Err(RerankError::Run(
                                "the reranker panicked on this batch".into(),
                            ))
                        })
                        .collect()
                });
        let seconds = seconds_since(started);
        let mut answers = Vec::with_capacity(ready.len());
        for (((job, arrived), docs), outcome) in
            ready
                .iter()
                .zip(&docs)
                .zip(outcomes.into_iter().chain(std::iter::repeat_with(|| {
                    Err(RerankError::Run(
                        "the reranker returned too few results".into(),
                    ))
                })))
        {
            let answer = match outcome {
                Ok(output) if output.scores.len() == docs.len() => {
                    self.metrics
                        .pairs
                        .fetch_add(output.stats.pairs as u64, Ordering::Relaxed);
                    self.metrics.tokens.fetch_add(
                        job.docs.iter().map(|d| d.tokens as u64).sum(),
                        Ordering::Relaxed,
                    );
                    Ok(Scored {
                        output,
                        batch_requests,
                        queue_ms: (started - *arrived).as_secs_f64() * 1e3,
                    })
                }
                Ok(output) => Err(ApiError::new(
                    ErrorKind::Backend,
                    format!(
                        "the reranker returned {} scores for {} documents",
                        output.scores.len(),
                        docs.len()
                    ),
                )),
                Err(error) => Err(rerank_error(error)),
            };
            self.metrics.record_stage("rerank", seconds);
            answers.push(answer);
        }
        drop(queries);
        drop(docs);
        for ((job, _), answer) in ready.into_iter().zip(answers) {
            // A client that left meanwhile has dropped its receiver: nothing to answer.
            let _ = job.reply.send(answer);
        }
    }

    /// The document states of every document of the group, for rerankers that read them: from
    /// the cache, else computed in one towers pass over the group's distinct new documents.
    /// Empty for rerankers that read none.
    fn group_states(
        &mut self,
        live: &[(RerankJob, Instant)],
    ) -> Result<HashMap<DocKey, Arc<DocStates>>, ApiError> {
        let mut states = HashMap::new();
        if self.reranker.state_codec_id().is_none() {
            return Ok(states);
        }
        let started = Instant::now();
        let mut missing: Vec<(DocKey, &Document)> = Vec::new();
        let mut pending: HashSet<DocKey> = HashSet::new();
        for doc in live.iter().flat_map(|(job, _)| &job.docs) {
            let key = doc_key(&doc.title, &doc.text);
            if states.contains_key(&key) || pending.contains(&key) {
                continue;
            }
            match self.cache.get(&key) {
                Some(cached) => {
                    self.metrics
                        .state_cache_hits
                        .fetch_add(1, Ordering::Relaxed);
                    states.insert(key, cached);
                }
                None => {
                    pending.insert(key);
                    missing.push((key, doc));
                }
            }
        }
        if !missing.is_empty() {
            self.metrics
                .state_cache_misses
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            let docs: Vec<RerankDoc<'_>> = missing
                .iter()
                .map(|(_, d)| RerankDoc::new(&d.title, &d.text))
                .collect();
            let reranker = &self.reranker;
            let computed =
                std::panic::catch_unwind(AssertUnwindSafe(|| reranker.document_states(&docs)))
                    .map_err(|_| ApiError::new(ErrorKind::Backend, "the document towers panicked"))?
                    .map_err(rerank_error)?;
            if let Some(computed) = computed {
                if computed.len() != missing.len() {
                    return Err(ApiError::new(
                        ErrorKind::Backend,
                        format!(
                            "the towers returned {} document states for {} documents",
                            computed.len(),
                            missing.len()
                        ),
                    ));
                }
                for ((key, _), s) in missing.iter().zip(computed) {
                    let s = Arc::new(s);
                    self.cache.insert(*key, s.clone());
                    states.insert(*key, s);
                }
            }
        }
        self.metrics.record_stage("states", seconds_since(started));
        Ok(states)
    }

    /// Picks up a generation of the index published since it was opened (appends, deletes),
    /// checking the manifest at most once a second; on an error the current one stays.
    fn follow_index_updates(&mut self) {
        if self.engine_checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.engine_checked = Instant::now();
        let Some(engine) = &self.engine else {
            return;
        };
        match engine.reopen_if_updated() {
            Ok(Some(next)) => {
                eprintln!(
                    "sieve serve: index {} now at generation {} ({} documents)",
                    next.index().path().display(),
                    next.index().manifest.generation(),
                    next.index().len()
                );
                self.engine = Some(Arc::new(next));
                self.metrics.index_reloads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(error) => eprintln!("sieve serve: keeping the loaded index: {error}"),
        }
    }

    fn search(&self, job: SearchJob, arrived: Instant) {
        if !self.still_wanted(&job.reply, job.deadline) {
            if !job.reply.is_closed() {
                let _ = job.reply.send(Err(timeout()));
            }
            return;
        }
        self.metrics.record_stage("queue", seconds_since(arrived));
        let started = Instant::now();
        let answer = match &self.engine {
            None => Err(ApiError::new(
                ErrorKind::NotConfigured,
                "this server has no index: start it with --index DIR",
            )),
            Some(engine) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| engine.search(&job.request))) {
                    Ok(Ok(response)) => {
                        if let Some(r) = &response.rerank {
                            self.metrics
                                .pairs
                                .fetch_add(r.stats.pairs as u64, Ordering::Relaxed);
                        }
                        Ok(response)
                    }
                    Ok(Err(SieveError::InvalidRequest(message))) => Err(ApiError::invalid(message)),
                    Ok(Err(SieveError::Rerank {
                        error: RerankError::Invalid(message),
                        ..
                    })) => Err(ApiError::invalid(message)),
                    Ok(Err(error)) => Err(ApiError::new(ErrorKind::Backend, error.to_string())),
                    Err(_) => Err(ApiError::new(
                        ErrorKind::Backend,
                        "the search panicked on this request",
                    )),
                }
            }
        };
        self.metrics.record_stage("search", seconds_since(started));
        let _ = job.reply.send(answer);
    }
}

fn timeout() -> ApiError {
    ApiError::new(
        ErrorKind::Timeout,
        "the request was not answered within the server's deadline",
    )
}

//! State shared by every replica through Redis (`[store] redis` or
//! `redis_cluster`), with the local memory store as near cache and
//! fallback.
//!
//! The policy is synchronous and asks its store stage by stage; a round
//! trip per question would cost several per send. Instead, before a send is
//! judged, [`Policy::plan`](crate::policy::Policy::plan) names everything the stateful stages will read
//! and update (the number's backoff state, each limit counter, each budget
//! window), and [`SharedStore::prepare`] runs all of it in Redis in one
//! round trip: one script on a single Redis ([`super::redis_batch`]), one
//! per key on a Cluster ([`super::redis_ops`]): the backoff step is
//! judged and reserved, every counter counted, every budget charged against
//! its cap, each atomically in Redis, so concurrent replicas never count a
//! send twice nor overshoot a cap. The policy then judges on a [`SendView`]
//! that answers from those results, and what the judgement gives back (the
//! backoff step and the budget of a send a later stage stopped, counts of an
//! attempt that backoff stopped before the limits saw it) is written back
//! after the answer, off the request path. The same script carries a read
//! of the fleet's log of the adaptive stage when the send's turn says so
//! ([`super::fleet::Fleet::turn`]: one read at a time, shared by the sends
//! in flight), learned before the send is judged.
//!
//! Blocks are read from the near cache: every replica mirrors the shared
//! block index into its local store every `store.near_cache`, so a send to
//! an already-blocked key costs no round trip, and a block set by another
//! replica is enforced here within `near_cache`. A block set here is
//! enforced here at once and written to Redis asynchronously; one that
//! cannot be written yet (Redis down) is kept and written when Redis is
//! back. A rule that trips (a limit's `block`, an adaptive signal) is
//! recorded the same way, off the request path, by one script on the
//! key's shared block and offences ([`ops::trip`]): a key that any replica
//! already blocked is renewed as the same offence, so replicas that trip
//! one key before its block reached them count one offence between them,
//! and each takes Redis's block as its own.
//!
//! When Redis is down or slow (the link is degraded, or the pipeline fails
//! or outlasts `store.timeout`), a send is judged by `store.on_error`:
//! `local` on the local memory store (limits then count from zero on each
//! replica, blocks stay enforced from the mirror), `block` stops it, `allow`
//! lets the stateful stages pass. It is never answered 5xx.
//!
//! Still per replica: the adaptive stage's state (conversions, pending
//! confirmations, sender pairs: each replica's memory, fed by the fleet's
//! log before every judged send), number classification, minted
//! certificates and the balance cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::Value;

use super::redis::{Call, LinkError, RedisLink};
use super::redis_batch;
use super::redis_ops::{self as ops, BackoffJudgement};
use super::{
    BackoffState, BlockEntry, Conversion, Escalation, MemoryStore, Pending, Store, StoreStats,
};
use crate::base::clock::{Clock, Millis};
use crate::config::{self, Action, StoreOnError};

/// What one send will read and update in a shared store ([`crate::policy::Policy::plan`]).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The number's backoff key and the stage's settings.
    pub backoff: Option<(String, super::redis_ops::BackoffParams)>,
    /// Each limit counter and its periods.
    pub limits: Vec<(String, Vec<Millis>)>,
    /// The limit of `limits` counted on the number alone (its place, and
    /// what its counter keys start with). With a backoff stage, Redis keeps
    /// its counter in the number's backoff hash, as the field named by
    /// that start: one key and one operation for both.
    pub by_number: Option<(usize, String)>,
    /// Each budget window the send would spend in.
    pub spends: Vec<PlannedSpend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSpend {
    pub key: String,
    /// What this send costs (millionths).
    pub amount: u64,
    pub cap: u64,
    /// When the window ends.
    pub expire_at: Millis,
}

/// Counts of what the shared store did, for metrics.
#[derive(Debug, Default)]
pub struct SharedStats {
    /// Sends judged on shared state (one pipeline, or none when nothing
    /// stateful was left to judge).
    pub shared: AtomicU64,
    /// Sends judged while Redis was unavailable, per `store.on_error`.
    pub fallback: AtomicU64,
    /// Write-backs (refunds, undos, blocks) that did not reach Redis.
    pub write_errors: AtomicU64,
    /// Mirrors of the shared blocks, and those that failed.
    pub syncs: AtomicU64,
    pub sync_errors: AtomicU64,
    /// Store calls the plan did not foresee, answered locally (a bug if
    /// ever non-zero).
    pub unplanned: AtomicU64,
}

/// A rule that tripped here, to record in Redis ([`ops::trip`]).
#[derive(Clone)]
struct Tripped {
    at: Millis,
    esc: Escalation,
    rule: Arc<str>,
    action: Action,
}

pub struct SharedStore {
    local: Arc<MemoryStore>,
    link: RedisLink,
    on_error: StoreOnError,
    near_cache: Duration,
    /// Blocks set here whose Redis write has not succeeded yet.
    unsynced: Mutex<HashMap<String, BlockEntry>>,
    /// Blocks removed here whose removal has not reached Redis yet.
    unremoved: Mutex<HashSet<String>>,
    /// Trips made here that Redis has not recorded yet.
    tripping: Mutex<HashMap<String, Tripped>>,
    pub stats: SharedStats,
    /// Itself, for tasks that write to Redis after a call returns.
    me: Weak<SharedStore>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on the current Tokio runtime, if there is one.
fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(f);
    }
}

impl SharedStore {
    pub fn new(local: Arc<MemoryStore>, link: RedisLink, cfg: &config::Store) -> Arc<Self> {
        Arc::new_cyclic(|me| SharedStore {
            me: me.clone(),
            local,
            link,
            on_error: cfg.on_error,
            near_cache: cfg.near_cache,
            unsynced: Mutex::default(),
            unremoved: Mutex::default(),
            tripping: Mutex::default(),
            stats: SharedStats::default(),
        })
    }

    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    pub fn local(&self) -> &Arc<MemoryStore> {
        &self.local
    }

    pub fn on_error(&self) -> StoreOnError {
        self.on_error
    }

    /// Keeps `entry` on `key` until Redis has it, and writes it there.
    fn share_block(&self, key: &str, entry: BlockEntry) {
        lock(&self.unremoved).remove(key);
        lock(&self.tripping).remove(key);
        lock(&self.unsynced).insert(key.to_string(), entry.clone());
        if let Some(me) = self.me.upgrade() {
            let key = key.to_string();
            spawn(async move {
                let now = entry.since;
                me.push_block(&key, &entry, now).await;
            });
        }
    }

    /// Blocks set or removed here that Redis has not heard of yet.
    pub fn unsynced(&self) -> usize {
        lock(&self.unsynced).len() + lock(&self.unremoved).len() + lock(&self.tripping).len()
    }

    /// Runs the plan of one send in Redis (one pipeline: one script on a
    /// single Redis) and returns the view the policy judges it on.
    pub async fn prepare(self: &Arc<Self>, plan: Option<Plan>, now: Millis) -> SendView {
        self.prepare_with(plan, now, None).await
    }

    /// [`SharedStore::prepare`] with `extra`, a read on another key (the
    /// fleet's log, when the send carries that read:
    /// [`super::fleet::Fleet::turn`]), in the same pipeline; its answer is
    /// [`SendView::take_extra`] (`None` when it was not asked: nothing is
    /// judged, or Redis is unavailable). It never changes how the send is
    /// judged: when the plan has nothing stateful, it is the send's only
    /// call, and its failure leaves the send judged as without it.
    pub async fn prepare_with(
        self: &Arc<Self>,
        plan: Option<Plan>,
        now: Millis,
        extra: Option<Call<'static>>,
    ) -> SendView {
        let mut view = SendView {
            shared: self.clone(),
            mode: Mode::Shared,
            now,
            st: Mutex::default(),
            extra: None,
        };
        let Some(plan) = plan else {
            self.stats.shared.fetch_add(1, Ordering::Relaxed);
            return view;
        };
        if plan.backoff.is_none() && plan.limits.is_empty() && plan.spends.is_empty() {
            self.stats.shared.fetch_add(1, Ordering::Relaxed);
            view.extra = self.extra_alone(extra).await;
            return view;
        }
        if !self.link.is_up() {
            view.mode = self.fallback();
            return view;
        }
        let (mut calls, spend_calls) = plan_calls(&self.link, &plan, now);
        let asked_extra = extra.is_some();
        calls.extend(extra);
        let mut answers = match redis_batch::eval_many(&self.link, calls).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "shared state unavailable for a send");
                view.mode = self.fallback();
                return view;
            }
        };
        self.stats.shared.fetch_add(1, Ordering::Relaxed);
        if asked_extra {
            view.extra = answers.pop();
        }
        let st = view.st.get_mut().unwrap_or_else(|p| p.into_inner());
        self.take_answers(st, plan, spend_calls, answers);
        view
    }

    /// The extra call of [`SharedStore::prepare_with`] as the send's only
    /// call (its plan has nothing stateful): its answer, or `None` when
    /// there is none to ask or Redis is unavailable.
    async fn extra_alone(&self, extra: Option<Call<'static>>) -> Option<Result<Value, LinkError>> {
        let (Some(c), true) = (extra, self.link.is_up()) else {
            return None;
        };
        Some(match self.link.eval_many(&[c]).await {
            Ok(mut a) => a
                .pop()
                .unwrap_or(Err(LinkError::Server("no answer".into()))),
            Err(e) => Err(e),
        })
    }

    /// Reads the pipeline's answers into the view's state, in the order of
    /// [`plan_calls`]: the backoff step, each limit counter, each budget
    /// window. A key whose answer cannot be read is judged on local state.
    fn take_answers(
        &self,
        st: &mut ViewState,
        plan: Plan,
        spend_calls: Vec<bool>,
        answers: Vec<Result<Value, LinkError>>,
    ) {
        let mut answers = answers.into_iter();
        let merged = merged(&plan).map(|(i, field)| (i, field.to_string()));
        // The number's own counter, answered with its backoff step.
        let mut number_counts = None;
        if let Some((key, _)) = &plan.backoff {
            let judged = match &merged {
                Some((i, _)) => {
                    let n = plan.limits[*i].1.len();
                    answers
                        .next()
                        .map(|a| a.and_then(|v| ops::read_backoff_hit(v, n)))
                        .map(|r| {
                            r.map(|(judged, counts)| {
                                number_counts = Some(counts);
                                judged
                            })
                        })
                }
                None => answers.next().map(|a| a.and_then(ops::read_backoff_judge)),
            };
            match judged {
                Some(Ok(judged)) => {
                    st.backoff = Some(PreBackoff {
                        key: key.clone(),
                        cur: judged.before,
                        judged,
                        touched: false,
                    })
                }
                other => self.unreadable("backoff", other.and_then(Result::err)),
            }
        }
        let number = plan.backoff.map(|(key, _)| key);
        for (i, (key, periods)) in plan.limits.into_iter().enumerate() {
            if let Some((_, field)) = merged.as_ref().filter(|(m, _)| *m == i) {
                // Unreadable with the backoff step: reported there.
                if let (Some(counts), Some(number)) = (number_counts.take(), &number) {
                    st.hits.push(PreHit {
                        key,
                        periods,
                        counts,
                        used: false,
                        in_number: Some((number.clone(), field.clone())),
                    });
                }
                continue;
            }
            match answers
                .next()
                .map(|a| a.and_then(|v| ops::read_hit(v, periods.len())))
            {
                Some(Ok(counts)) => st.hits.push(PreHit {
                    key,
                    periods,
                    counts,
                    used: false,
                    in_number: None,
                }),
                other => self.unreadable("hit", other.and_then(Result::err)),
            }
        }
        for (s, asked) in plan.spends.into_iter().zip(spend_calls) {
            st.spends.extend(self.take_spend(s, asked, &mut answers));
        }
    }

    /// A budget window's charge: Redis's answer when it was asked, else
    /// (an amount past Redis integers) a refusal at what the local store
    /// has spent; the window's total is mirrored locally. `None` when the
    /// answer cannot be read.
    fn take_spend(
        &self,
        s: PlannedSpend,
        asked: bool,
        answers: &mut impl Iterator<Item = Result<Value, LinkError>>,
    ) -> Option<PreSpend> {
        let result = if asked {
            match answers.next().map(|a| a.and_then(ops::read_spend)) {
                Some(Ok(r)) => r,
                other => {
                    self.unreadable("spend", other.and_then(Result::err));
                    return None;
                }
            }
        } else {
            Err(self.local.spent(&s.key))
        };
        let (Ok(t) | Err(t)) = result;
        self.local.mirror_spent(&s.key, t);
        Some(PreSpend {
            key: s.key,
            amount: s.amount,
            expire_at: s.expire_at,
            result,
            taken: false,
        })
    }

    fn fallback(&self) -> Mode {
        self.stats.fallback.fetch_add(1, Ordering::Relaxed);
        match self.on_error {
            StoreOnError::Local => Mode::Local,
            StoreOnError::Block => Mode::Refuse,
            StoreOnError::Allow => Mode::Allow,
        }
    }

    fn unreadable(&self, what: &str, e: Option<LinkError>) {
        self.stats.unplanned.fetch_add(1, Ordering::Relaxed);
        match e {
            Some(e) => {
                tracing::warn!(call = what, error = %e, "a shared-state call failed: that key is judged on local state")
            }
            None => tracing::warn!(
                call = what,
                "a shared-state call gave no answer: that key is judged on local state"
            ),
        }
    }

    /// Writes `calls` to Redis off the request path.
    fn write_back(self: &Arc<Self>, calls: Vec<Call<'static>>) {
        if calls.is_empty() {
            return;
        }
        let me = self.clone();
        spawn(async move { me.send_back(calls).await });
    }

    /// Writes `calls` to Redis now, counting those that fail.
    async fn send_back(&self, calls: Vec<Call<'static>>) {
        if calls.is_empty() {
            return;
        }
        let n = calls.len();
        let failed = match redis_batch::eval_many(&self.link.background(), calls).await {
            Ok(answers) => answers.iter().filter(|a| a.is_err()).count(),
            Err(_) => n,
        };
        self.stats
            .write_errors
            .fetch_add(failed as u64, Ordering::Relaxed);
    }

    /// Writes the block on `key` to Redis (the index, then the block); on
    /// success it is no longer kept as unsynced.
    async fn push_block(&self, key: &str, entry: &BlockEntry, now: Millis) -> bool {
        match ops::set_block(&self.link.background(), key, entry, now).await {
            Ok(()) => {
                let mut u = lock(&self.unsynced);
                if u.get(key) == Some(entry) {
                    u.remove(key);
                }
                true
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "block not written to redis yet");
                false
            }
        }
    }

    /// Records the trip `t` on `key` in Redis ([`ops::trip`]: a new
    /// offence, or the renewal of a block any replica set) and takes
    /// Redis's block as this replica's; on success it is no longer kept
    /// as tripping.
    async fn push_trip(&self, key: &str, t: &Tripped, now: Millis) -> bool {
        let link = self.link.background();
        match ops::trip(&link, key, t.at, now, &t.esc, &t.rule, t.action).await {
            Ok(entry) => {
                {
                    let mut tripping = lock(&self.tripping);
                    if tripping.get(key).is_none_or(|x| x.at != t.at) {
                        // Lifted, set by hand or tripped again here
                        // meanwhile: that decides the local block.
                        return true;
                    }
                    tripping.remove(key);
                }
                // Redis's count is the fleet's: one offence however many
                // replicas tripped it. The local estimate gives way unless
                // it is the same offence, lasting longer.
                self.local.seed_offences(key, entry.offence, entry.since);
                match self.local.block(key, now.max(t.at)) {
                    Some(mine) if mine.offence == entry.offence && mine.until >= entry.until => {}
                    _ if entry.until > now => self.local.set_block(key, entry),
                    _ => {}
                }
                true
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "trip not recorded in redis yet");
                false
            }
        }
    }

    /// Mirrors the shared blocks into the local store: first writes what
    /// was set or removed here while Redis could not be written, then
    /// lists the active blocks and makes the local ones the same (blocks
    /// whose write is still on its way are kept).
    pub async fn sync(&self, now: Millis) -> Result<usize, LinkError> {
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        let result = self.sync_inner(now).await;
        if result.is_err() {
            self.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn sync_inner(&self, now: Millis) -> Result<usize, LinkError> {
        if !self.link.is_up() {
            return Err(LinkError::Down("not syncing blocks".into()));
        }
        let pending: Vec<(String, BlockEntry)> = lock(&self.unsynced)
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (key, entry) in pending {
            if entry.until <= now {
                lock(&self.unsynced).remove(&key);
            } else {
                self.push_block(&key, &entry, now).await;
            }
        }
        let trips: Vec<(String, Tripped)> = lock(&self.tripping)
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        for (key, t) in trips {
            if self.local.block(&key, now).is_none() {
                // Over (or lifted) before Redis could record it.
                let mut tripping = lock(&self.tripping);
                if tripping.get(&key).is_some_and(|x| x.at == t.at) {
                    tripping.remove(&key);
                }
            } else {
                self.push_trip(&key, &t, now).await;
            }
        }
        let removed: Vec<String> = lock(&self.unremoved).iter().cloned().collect();
        for key in removed {
            ops::remove_block(&self.link.background(), &key).await?;
            lock(&self.unremoved).remove(&key);
        }
        // A Redis that lost the fleet's state (restarted without
        // persistence, flushed) gets this replica's active blocks back:
        // otherwise the listing below would lift them here too.
        if ops::state_lost(&self.link.background()).await? {
            self.restore_blocks(now).await;
        }
        // Every active block: may take longer than a send may wait.
        let listed = ops::blocks(&self.link.background(), now).await?;
        let unremoved = lock(&self.unremoved).clone();
        let mut seen = HashSet::with_capacity(listed.len());
        for (key, entry) in &listed {
            seen.insert(key.as_str());
            if unremoved.contains(key) {
                continue;
            }
            self.local.seed_offences(key, entry.offence, entry.since);
            match self.local.block(key, now) {
                // A longer block known here (set here, on its way) stays.
                Some(mine) if mine.until >= entry.until => {}
                _ => self.local.set_block(key, entry.clone()),
            }
        }
        let unsynced = lock(&self.unsynced);
        let tripping = lock(&self.tripping);
        for (key, _) in self.local.blocks(now) {
            if !seen.contains(key.as_str())
                && !unsynced.contains_key(&key)
                && !tripping.contains_key(&key)
            {
                self.local.remove_block(&key);
            }
        }
        Ok(listed.len())
    }

    /// Writes this replica's active blocks (those set by hand included,
    /// lifted ones not) back to a Redis that lost them, and says how many;
    /// a block Redis holds for as long or longer is left as it is. (A
    /// fleet's first sync on a new Redis finds the marker missing too:
    /// then there is nothing to fill.)
    async fn restore_blocks(&self, now: Millis) {
        let unremoved = lock(&self.unremoved).clone();
        let mine: Vec<(String, BlockEntry)> = self
            .local
            .blocks(now)
            .into_iter()
            .filter(|(k, _)| !unremoved.contains(k))
            .collect();
        if mine.is_empty() {
            return;
        }
        let mut restored = 0;
        for (key, entry) in &mine {
            // Only what Redis lacks: a block another replica wrote since
            // (or renewed for longer) stays as it is.
            let link = self.link.background();
            if let Ok(Some(there)) = ops::block(&link, key, now).await {
                if there.until >= entry.until {
                    continue;
                }
            }
            if self.push_block(key, entry, now).await {
                restored += 1;
            }
        }
        if restored == 0 {
            return;
        }
        tracing::warn!(
            restored,
            active = mine.len(),
            "redis lost the shared blocks (restarted without persistence, or flushed): restored this replica's active blocks"
        );
    }

    /// Mirrors the shared blocks every `store.near_cache` until the store
    /// is dropped or `stop` fires.
    pub fn start_sync(
        self: &Arc<Self>,
        clock: Arc<dyn Clock>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let weak: Weak<SharedStore> = Arc::downgrade(self);
        let every = self.near_cache.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.sync(clock.now()).await {
                    tracing::debug!(error = %e, "shared blocks not mirrored this time");
                }
            }
        });
    }
}

/// The shared store asked outside a send's view (the admin API, explain,
/// confirmations): blocks from the mirror and written through to Redis,
/// everything else on the local store.
impl Store for SharedStore {
    fn block(&self, key: &str, now: Millis) -> Option<BlockEntry> {
        self.local.block(key, now)
    }

    /// This replica's near cache: the fleet's counters live in Redis.
    fn peek_hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]) {
        self.local.peek_hit(key, periods, now, counts)
    }

    fn peek_offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32 {
        self.local.peek_offend(key, now, forgive_after)
    }

    fn peek_backoff(&self, key: &str) -> Option<BackoffState> {
        self.local.peek_backoff(key)
    }

    fn set_block(&self, key: &str, entry: BlockEntry) {
        self.local.set_block(key, entry.clone());
        self.share_block(key, entry);
    }

    /// Pinned in the near cache (the mirror keeps it pinned too: its rule
    /// is `manual`), then written to Redis.
    fn set_manual_block(&self, key: &str, entry: BlockEntry) -> Result<(), String> {
        self.local.set_manual_block(key, entry.clone())?;
        self.share_block(key, entry);
        Ok(())
    }

    fn may_block(&self, kind: &str) -> bool {
        self.local.may_block(kind)
    }

    fn remove_block(&self, key: &str) -> bool {
        let removed = self.local.remove_block(key);
        lock(&self.unsynced).remove(key);
        lock(&self.tripping).remove(key);
        lock(&self.unremoved).insert(key.to_string());
        if let Some(me) = self.me.upgrade() {
            let key = key.to_string();
            spawn(async move {
                if ops::remove_block(&me.link.background(), &key).await.is_ok() {
                    lock(&me.unremoved).remove(&key);
                } else {
                    me.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        removed
    }

    fn blocks(&self, now: Millis) -> Vec<(String, BlockEntry)> {
        self.local.blocks(now)
    }

    fn offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32 {
        self.local.offend(key, now, forgive_after)
    }

    /// Trips here at once on the local state (the mirror's blocks and
    /// offences, as [`Store::trip`] does on the memory store), then
    /// records the trip in Redis off the request path in one script that
    /// reads the key's shared block and offences ([`ops::trip`]): a key
    /// any replica already blocked is renewed as the same offence, so
    /// replicas tripping one key before its block reached them count one
    /// offence, not one each. Redis's block then replaces the local
    /// estimate. A trip Redis cannot record now is retried by the next
    /// sync while its block lasts.
    fn trip(
        &self,
        key: &str,
        now: Millis,
        esc: &Escalation,
        rule: Arc<str>,
        action: Action,
    ) -> (Millis, u32) {
        let tripped = self.local.trip(key, now, esc, rule.clone(), action);
        let t = Tripped {
            at: now,
            esc: esc.clone(),
            rule,
            action,
        };
        lock(&self.unremoved).remove(key);
        lock(&self.unsynced).remove(key);
        lock(&self.tripping).insert(key.to_string(), t.clone());
        if let Some(me) = self.me.upgrade() {
            let key = key.to_string();
            spawn(async move {
                me.push_trip(&key, &t, now).await;
            });
        }
        tripped
    }

    fn hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]) {
        self.local.hit(key, periods, now, counts)
    }

    fn backoff(&self, key: &str, now: Millis, update: &mut dyn FnMut(&mut BackoffState)) {
        self.local.backoff(key, now, update)
    }

    fn spend(&self, key: &str, amount: u64, cap: u64) -> Result<u64, u64> {
        self.local.spend(key, amount, cap)
    }

    fn refund(&self, key: &str, amount: u64) {
        self.local.refund(key, amount)
    }

    fn spent(&self, key: &str) -> u64 {
        self.local.spent(key)
    }

    fn conversion(&self, key: &str, create: bool, f: &mut dyn FnMut(&mut Conversion)) -> bool {
        self.local.conversion(key, create, f)
    }

    fn pending(&self, number: &str, create: bool, f: &mut dyn FnMut(&mut Pending)) -> bool {
        self.local.pending(number, create, f)
    }

    fn pair_seen(&self, pair: &str, now: Millis, record: bool) -> Option<Millis> {
        self.local.pair_seen(pair, now, record)
    }

    fn confirmations_seen(&self, key: &str, now: Millis, record: bool) -> Option<Millis> {
        self.local.confirmations_seen(key, now, record)
    }

    fn stats(&self) -> StoreStats {
        self.local.stats()
    }
}

/// The calls of one send's plan, in the order their answers are read: the
/// backoff step, each limit counter, each budget window; and for each
/// budget window whether it is asked (an amount past Redis integers is
/// refused without asking).
fn plan_calls(link: &RedisLink, plan: &Plan, now: Millis) -> (Vec<Call<'static>>, Vec<bool>) {
    let mut calls: Vec<Call<'static>> = Vec::new();
    let merged = merged(plan);
    if let Some((key, params)) = &plan.backoff {
        calls.push(match merged {
            Some((i, field)) => {
                ops::backoff_hit_call(link, key, now, params, field, &plan.limits[i].1)
            }
            None => ops::backoff_judge_call(link, key, now, params),
        });
    }
    for (i, (key, periods)) in plan.limits.iter().enumerate() {
        if merged.is_none_or(|(m, _)| m != i) {
            calls.push(ops::hit_call(link, key, periods, now));
        }
    }
    let mut spend_calls = Vec::with_capacity(plan.spends.len());
    for s in &plan.spends {
        let c = ops::spend_call(link, &s.key, s.amount, s.cap, now, s.expire_at);
        spend_calls.push(c.is_some());
        calls.extend(c);
    }
    (calls, spend_calls)
}

/// The limit whose counter rides in the number's backoff hash (its place
/// in `plan.limits` and its field): the plan's limit counted on the number
/// alone, when there is a backoff stage.
fn merged(plan: &Plan) -> Option<(usize, &str)> {
    match (&plan.backoff, &plan.by_number) {
        (Some(_), Some((i, field))) if *i < plan.limits.len() => Some((*i, field.as_str())),
        _ => None,
    }
}

/// How a send's view answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// From the pipeline's results (and the mirror, for blocks).
    Shared,
    /// Redis unavailable, `on_error = "local"`: the local store.
    Local,
    /// Redis unavailable, `on_error = "block"`: the send is stopped.
    Refuse,
    /// Redis unavailable, `on_error = "allow"`: stateful stages pass.
    Allow,
}

struct PreBackoff {
    key: String,
    judged: BackoffJudgement,
    /// The state as the policy's closures see it.
    cur: BackoffState,
    touched: bool,
}

struct PreHit {
    key: String,
    periods: Vec<Millis>,
    counts: Vec<u64>,
    used: bool,
    /// Kept in Redis as a field of a number's backoff hash: the number and
    /// the field.
    in_number: Option<(String, String)>,
}

struct PreSpend {
    key: String,
    amount: u64,
    expire_at: Millis,
    result: Result<u64, u64>,
    taken: bool,
}

#[derive(Default)]
struct ViewState {
    backoff: Option<PreBackoff>,
    hits: Vec<PreHit>,
    spends: Vec<PreSpend>,
    /// Net change to give a budget window in Redis after the answer:
    /// refunds (negative) and charges a monitored budget let through.
    spend_delta: HashMap<String, (i128, Millis)>,
    undo_backoff: bool,
}

/// One send's store: what the pipeline answered, the mirror for blocks,
/// the local store for the rest. Dropped, it writes back what the
/// judgement gave back.
pub struct SendView {
    shared: Arc<SharedStore>,
    mode: Mode,
    now: Millis,
    st: Mutex<ViewState>,
    /// The answer to the extra call of [`SharedStore::prepare_with`].
    extra: Option<Result<Value, LinkError>>,
}

impl SendView {
    /// Redis is unavailable and `store.on_error = "block"`: the send must
    /// be stopped without judging.
    pub fn refused(&self) -> bool {
        self.mode == Mode::Refuse
    }

    /// The answer to the extra call given to [`SharedStore::prepare_with`]
    /// (`None` when it was not asked).
    pub fn take_extra(&mut self) -> Option<Result<Value, LinkError>> {
        self.extra.take()
    }

    /// Whether the send was judged on local state for want of Redis.
    pub fn fell_back(&self) -> bool {
        self.mode != Mode::Shared
    }

    fn local(&self) -> &MemoryStore {
        &self.shared.local
    }
}

impl SendView {
    /// Writes back now what the judgement gave back, and waits for Redis
    /// (tests; the guard lets a dropped view write it in the background).
    pub async fn settle(mut self) {
        let calls = self.give_back();
        self.shared.send_back(calls).await;
    }

    /// The calls that give back in Redis what the judgement did not keep.
    fn give_back(&mut self) -> Vec<Call<'static>> {
        if self.mode != Mode::Shared {
            return Vec::new();
        }
        let st = std::mem::take(self.st.get_mut().unwrap_or_else(|p| p.into_inner()));
        let link = &self.shared.link;
        let mut calls = Vec::new();
        // Counted for an attempt the limits never judged (an earlier stage
        // stopped it): not an attempt they count.
        for h in st.hits.iter().filter(|h| !h.used) {
            calls.push(match &h.in_number {
                Some((number, field)) => {
                    ops::hash_unhit_call(link, number, field, &h.periods, self.now)
                }
                None => ops::unhit_call(link, &h.key, &h.periods, self.now),
            });
        }
        if let Some(b) = &st.backoff {
            if let Some(r) = b.judged.reservation {
                if st.undo_backoff || !b.touched {
                    calls.push(ops::backoff_undo_call(link, &b.key, &r));
                }
            }
        }
        let mut delta = st.spend_delta;
        for s in st.spends.iter().filter(|s| s.result.is_ok() && !s.taken) {
            let d = delta.entry(s.key.clone()).or_insert((0, s.expire_at));
            d.0 -= i128::from(s.amount);
        }
        for (key, (d, expire_at)) in delta {
            if d < 0 {
                let amount = u64::try_from(-d).unwrap_or(u64::MAX);
                calls.push(ops::refund_call(link, &key, amount));
                self.shared.local.refund(&key, amount);
            } else if d > 0 {
                let amount = u64::try_from(d).unwrap_or(u64::MAX);
                calls.extend(ops::spend_call(
                    link,
                    &key,
                    amount,
                    u64::MAX,
                    self.now,
                    expire_at,
                ));
            }
        }
        calls
    }
}

impl Drop for SendView {
    fn drop(&mut self) {
        let calls = self.give_back();
        self.shared.write_back(calls);
    }
}

impl Store for SendView {
    fn block(&self, key: &str, now: Millis) -> Option<BlockEntry> {
        self.shared.block(key, now)
    }

    fn set_block(&self, key: &str, entry: BlockEntry) {
        match self.mode {
            Mode::Shared => self.shared.set_block(key, entry),
            _ => self.local().set_block(key, entry),
        }
    }

    fn may_block(&self, kind: &str) -> bool {
        self.shared.may_block(kind)
    }

    fn remove_block(&self, key: &str) -> bool {
        self.shared.remove_block(key)
    }

    fn blocks(&self, now: Millis) -> Vec<(String, BlockEntry)> {
        self.shared.blocks(now)
    }

    fn offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32 {
        self.local().offend(key, now, forgive_after)
    }

    fn trip(
        &self,
        key: &str,
        now: Millis,
        esc: &Escalation,
        rule: Arc<str>,
        action: Action,
    ) -> (Millis, u32) {
        match self.mode {
            // Set while Redis is unavailable: kept as unsynced, so it is
            // written (and shared) once Redis is back.
            Mode::Shared | Mode::Local => self.shared.trip(key, now, esc, rule, action),
            _ => self.local().trip(key, now, esc, rule, action),
        }
    }

    fn hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]) {
        match self.mode {
            Mode::Shared => {}
            Mode::Local | Mode::Refuse => return self.local().hit(key, periods, now, counts),
            Mode::Allow => return counts.fill(0),
        }
        let mut st = lock(&self.st);
        match st.hits.iter_mut().find(|h| h.key == key && !h.used) {
            Some(h) if h.counts.len() == counts.len() => {
                h.used = true;
                counts.copy_from_slice(&h.counts);
            }
            _ => {
                drop(st);
                self.shared.stats.unplanned.fetch_add(1, Ordering::Relaxed);
                self.local().hit(key, periods, now, counts)
            }
        }
    }

    fn backoff(&self, key: &str, now: Millis, update: &mut dyn FnMut(&mut BackoffState)) {
        match self.mode {
            Mode::Shared => {}
            Mode::Local | Mode::Refuse => return self.local().backoff(key, now, update),
            Mode::Allow => return update(&mut BackoffState::default()),
        }
        let mut st = lock(&self.st);
        let undo = match st.backoff.as_mut() {
            Some(b) if b.key == key => {
                let mut s = b.cur;
                update(&mut s);
                b.touched = true;
                let undo = s.sends < b.cur.sends;
                b.cur = s;
                undo
            }
            _ => {
                drop(st);
                self.shared.stats.unplanned.fetch_add(1, Ordering::Relaxed);
                return self.local().backoff(key, now, update);
            }
        };
        if undo {
            st.undo_backoff = true;
        }
    }

    fn spend(&self, key: &str, amount: u64, cap: u64) -> Result<u64, u64> {
        match self.mode {
            Mode::Shared => {}
            Mode::Local | Mode::Refuse => return self.local().spend(key, amount, cap),
            Mode::Allow => return Ok(amount),
        }
        let mut st = lock(&self.st);
        let st = &mut *st;
        let Some(s) = st.spends.iter_mut().find(|s| s.key == key) else {
            self.shared.stats.unplanned.fetch_add(1, Ordering::Relaxed);
            return self.local().spend(key, amount, cap);
        };
        match s.result {
            Ok(total) if !s.taken => {
                s.taken = true;
                Ok(total)
            }
            Err(spent) if cap < u64::MAX => Err(spent),
            // A charge the pipeline did not make (a monitored budget past
            // its cap lets the send through and counts it): made after.
            _ => {
                let d = st
                    .spend_delta
                    .entry(key.to_string())
                    .or_insert((0, s.expire_at));
                d.0 += i128::from(amount);
                s.taken = true;
                let (Ok(t) | Err(t)) = s.result;
                Ok(t.saturating_add(amount))
            }
        }
    }

    fn refund(&self, key: &str, amount: u64) {
        match self.mode {
            Mode::Shared => {}
            Mode::Local | Mode::Refuse => return self.local().refund(key, amount),
            Mode::Allow => return,
        }
        let mut st = lock(&self.st);
        let expire_at = st
            .spends
            .iter()
            .find(|s| s.key == key)
            .map_or(self.now, |s| s.expire_at);
        let d = st
            .spend_delta
            .entry(key.to_string())
            .or_insert((0, expire_at));
        d.0 -= i128::from(amount);
    }

    fn spent(&self, key: &str) -> u64 {
        self.local().spent(key)
    }

    fn conversion(&self, key: &str, create: bool, f: &mut dyn FnMut(&mut Conversion)) -> bool {
        self.local().conversion(key, create, f)
    }

    fn pending(&self, number: &str, create: bool, f: &mut dyn FnMut(&mut Pending)) -> bool {
        self.local().pending(number, create, f)
    }

    fn pair_seen(&self, pair: &str, now: Millis, record: bool) -> Option<Millis> {
        self.local().pair_seen(pair, now, record)
    }

    fn confirmations_seen(&self, key: &str, now: Millis, record: bool) -> Option<Millis> {
        self.local().confirmations_seen(key, now, record)
    }

    fn stats(&self) -> StoreStats {
        self.local().stats()
    }
}

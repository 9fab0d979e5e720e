//! Prometheus metrics (text format) with prometheus-client.
//!
//! Counters move as things happen (sends, upstream answers); gauges of
//! state (blocks, spend, balance, cache sizes) are read when scraped. Labels
//! come from bounded sets (actions, stages, rule names from the policy file,
//! ISO regions, endpoint names): never a number, a body or a credential.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::DecisionEvent;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Typed label sets for the per-request families: looking one up costs no
/// allocation beyond the two texts a decision names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    product: &'static str,
    action: &'static str,
    stage: &'static str,
    rule: String,
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfirmationLabels {
    via: &'static str,
    /// `yes` when a forwarded send awaited it (`no`: it counted nowhere).
    matched: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

fn latency_histogram() -> Histogram {
    // 5 ms .. ~20 s: Twilio answers in tens to hundreds of milliseconds.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

pub struct Metrics {
    registry: Registry,
    sends: Family<SendLabels, Counter>,
    upstream: Family<UpstreamLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    confirmations: Family<ConfirmationLabels, Counter>,
    vouched: Counter,
    broadcast: Counter,
    pub blocks: Family<Labels, Gauge>,
    pub spent: Family<Labels, FloatGauge>,
    pub balance: Family<Labels, FloatGauge>,
    pub cache_entries: Family<Labels, Gauge>,
    pub evicted_live: Gauge,
    /// Automatic blocks evicted from a full block table while still active.
    pub blocks_evicted_live: Gauge,
    /// Sends refused for an unreadable context header, by header.
    context_refused: Family<Labels, Counter>,
    /// Read from the listener's and the upstream's counts when scraped.
    pub connections_closed: Family<Labels, Counter>,
    /// Status callbacks of shadowed messages, by result.
    pub status_callbacks: Family<Labels, Counter>,
    pub streams_cut: Family<Labels, Counter>,
    /// The shared store (Redis), read from its counts when scraped.
    pub store_degraded: Gauge,
    pub store_sends: Family<Labels, Counter>,
    pub store_unsynced: Gauge,
    pub redis: Family<Labels, Counter>,
    pub log_dropped: Counter,
    /// Reconciliation: sends Twilio lists that no replica forwarded, and
    /// the looks by result.
    reconcile_unseen: Family<Labels, Counter>,
    reconcile_looks: Family<Labels, Counter>,
    /// Forwarded sids held in memory, and those evicted for space.
    pub reconcile_sids: Gauge,
    pub reconcile_evicted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smsguard");
        let sends = Family::<SendLabels, Counter>::default();
        registry.register(
            "sends",
            "Judged sends by product, action, stage, rule and region",
            sends.clone(),
        );
        let upstream = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests forwarded to Twilio by endpoint and status",
            upstream.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "upstream_latency_seconds",
            "Time to Twilio's response headers by endpoint",
            latency.clone(),
        );
        let confirmations = Family::<ConfirmationLabels, Counter>::default();
        registry.register(
            "confirmations",
            "Confirmations seen (Verify approved, Feedback confirmed, admin API), by way and by whether a forwarded send awaited them",
            confirmations.clone(),
        );
        let vouched = Counter::default();
        registry.register(
            "vouched_sends",
            "Sends to numbers that proved receipt recently, which adaptive blocks and signals pass",
            vouched.clone(),
        );
        let broadcast = Counter::default();
        registry.register(
            "broadcast_sends",
            "Sends of one message to many numbers by the app itself (notifications, campaigns), which the adaptive stage neither counts nor judges",
            broadcast.clone(),
        );
        let blocks = Family::<Labels, Gauge>::default();
        registry.register("blocks_active", "Active blocks by key kind", blocks.clone());
        let spent = Family::<Labels, FloatGauge>::default();
        registry.register(
            "budget_spent",
            "Money spent in the current budget window, by window and region",
            spent.clone(),
        );
        let balance = Family::<Labels, FloatGauge>::default();
        registry.register(
            "balance",
            "Last known account balance, by account",
            balance.clone(),
        );
        let cache_entries = Family::<Labels, Gauge>::default();
        registry.register(
            "cache_entries",
            "Entries held per bounded table",
            cache_entries.clone(),
        );
        let evicted_live = Gauge::default();
        registry.register(
            "cache_evicted_live",
            "State evicted for space while it still mattered (raise store.capacity if this grows)",
            evicted_live.clone(),
        );
        let blocks_evicted_live = Gauge::default();
        registry.register(
            "blocks_evicted_live",
            "Automatic blocks (set by limits and the adaptive stage) evicted from a full block table while still active (raise store.block_capacity if this grows); manual blocks are never evicted",
            blocks_evicted_live.clone(),
        );
        let context_refused = Family::<Labels, Counter>::default();
        registry.register(
            "context_refused",
            "Sends refused because a context header (X-SMSGuard-Client-IP, X-SMSGuard-User) was present but unreadable or duplicated, by header",
            context_refused.clone(),
        );
        let connections_closed = Family::<Labels, Counter>::default();
        registry.register(
            "connections_closed",
            "Client connections the guard closed or refused: silent (nothing within listen.header_timeout), idle (listen.idle_timeout), per_ip (listen.max_connections_per_ip reached)",
            connections_closed.clone(),
        );
        let status_callbacks = Family::<Labels, Counter>::default();
        registry.register(
            "shadow_status_callbacks",
            "Status callbacks of shadowed messages posted to the app: posted (answered 2xx), failed (no answer or another status), dropped (too many pending)",
            status_callbacks.clone(),
        );
        let streams_cut = Family::<Labels, Counter>::default();
        registry.register(
            "streams_cut",
            "Streamed bodies (Twilio's answers, clients' uploads) cut for stalling: body_timeout or deadline",
            streams_cut.clone(),
        );
        let store_degraded = Gauge::default();
        registry.register(
            "store_degraded",
            "1 while Redis (the state shared by the replicas) does not answer and sends are judged by store.on_error; 0 when it answers or is not configured",
            store_degraded.clone(),
        );
        let store_sends = Family::<Labels, Counter>::default();
        registry.register(
            "store_sends",
            "Judged sends by where their state came from: shared (Redis) or fallback (store.on_error while Redis was unavailable)",
            store_sends.clone(),
        );
        let store_unsynced = Gauge::default();
        registry.register(
            "store_unsynced_blocks",
            "Blocks set or removed here that Redis has not been told of yet (written when it answers)",
            store_unsynced.clone(),
        );
        let redis = Family::<Labels, Counter>::default();
        registry.register(
            "redis",
            "The Redis link: calls, round_trips (commands sent; a pipeline is one), errors, timeouts, fast_failures (not sent while degraded), script_loads, probes, degradations, write_errors (write-backs lost), sync_errors",
            redis.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines (decision events included) dropped because stderr could not keep up; a send never waits for the log",
            log_dropped.clone(),
        );
        let reconcile_unseen = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_unseen",
            "Sends Twilio lists as made through the API that no smsguard replica forwarded (they went around the guard), by kind: message or call",
            reconcile_unseen.clone(),
        );
        for kind in ["message", "call"] {
            let _ = reconcile_unseen.get_or_create(&vec![("kind", kind.to_string())]);
        }
        let reconcile_looks = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_looks",
            "Reconciliation looks at Twilio's lists by result: clean, unseen (sends went around the guard), error (Twilio's lists could not be read), store_down (skipped: Redis does not answer), other_replica (another replica lists)",
            reconcile_looks.clone(),
        );
        let reconcile_sids = Gauge::default();
        registry.register(
            "reconcile_sids",
            "Sids of forwarded sends this replica holds in memory for reconciliation",
            reconcile_sids.clone(),
        );
        let reconcile_evicted = Counter::default();
        registry.register(
            "reconcile_sids_evicted",
            "Forwarded sids pushed out of memory for space before reconciliation was done with them (raise reconcile.capacity if this grows)",
            reconcile_evicted.clone(),
        );
        Metrics {
            reconcile_unseen,
            reconcile_looks,
            reconcile_sids,
            reconcile_evicted,
            log_dropped,
            store_degraded,
            store_sends,
            store_unsynced,
            redis,
            registry,
            connections_closed,
            status_callbacks,
            streams_cut,
            sends,
            upstream,
            latency,
            confirmations,
            vouched,
            broadcast,
            blocks,
            spent,
            balance,
            cache_entries,
            evicted_live,
            blocks_evicted_live,
            context_refused,
        }
    }
}

impl Metrics {
    pub fn decision(&self, e: &DecisionEvent) {
        let labels = SendLabels {
            product: e.product,
            action: e.action,
            stage: e.stage.unwrap_or("none"),
            rule: e.rule.clone().unwrap_or_else(|| "none".into()),
            region: e.region.clone().unwrap_or_else(|| "none".into()),
        };
        self.sends.get_or_create(&labels).inc();
        if e.vouched {
            self.vouched.inc();
        }
        if e.broadcast {
            self.broadcast.inc();
        }
    }

    /// A send refused for the context header `header`.
    pub fn context_refused(&self, header: &'static str) {
        self.context_refused
            .get_or_create(&vec![("header", header.to_string())])
            .inc();
    }

    pub fn upstream(&self, endpoint: &'static str, status: u16, took: Duration) {
        self.upstream
            .get_or_create(&UpstreamLabels { endpoint, status })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// A confirmation seen on the wire (`verify`, `feedback`) or the admin
    /// API (`api`).
    pub fn confirmation(&self, via: &'static str, matched: bool) {
        self.confirmations
            .get_or_create(&ConfirmationLabels {
                via,
                matched: if matched { "yes" } else { "no" },
            })
            .inc();
    }

    /// `n` sends of `kind` (`message`, `call`) went around the guard.
    pub fn reconcile_unseen(&self, kind: &'static str, n: u64) {
        self.reconcile_unseen
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc_by(n);
    }

    /// A reconciliation look ended with `result`.
    pub fn reconcile_look(&self, result: &'static str) {
        self.reconcile_looks
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// The Prometheus text format (0.0.4), which every Prometheus and
    /// `promtool check metrics` read: prometheus-client writes OpenMetrics,
    /// where a counter's metadata names it without its `_total` samples'
    /// suffix, and ends with `# EOF`.
    pub fn encode(&self) -> String {
        let mut open = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut open, &self.registry);
        let counters: Vec<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .iter()
                .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
            match meta {
                Some((p, rest)) => {
                    let name = rest.split(' ').next().unwrap_or("");
                    if counters.contains(&name) {
                        out.push_str(&format!("{p}{name}_total{}", &rest[name.len()..]));
                    } else {
                        out.push_str(line);
                    }
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }
}

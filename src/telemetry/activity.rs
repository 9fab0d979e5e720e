//! What the dashboard and the admin API show: the last decisions (a bounded
//! ring), sends per minute by decision and by region over the last hours,
//! and conversion (forwarded sends against confirmed ones) per region and
//! prefix over the last day, aggregated as decisions happen so a burst of
//! 10,000 a minute costs the page nothing.
//!
//! Memory is bounded: a fixed number of minutes, hours and recent
//! decisions, and bounded tables of blocked prefixes and regions and of
//! conversion per region, prefix and adaptive rule.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::DecisionEvent;
use crate::base::clock::Millis;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 3_600_000;
/// Hours of conversion kept: the current hour and the 23 before it.
pub const HOURS: usize = 24;
/// Adaptive rules counted (there are a few dozen at most).
const RULES: usize = 256;
/// Rows of the conversion tables in the summary.
const CONVERSION_REGIONS: usize = 12;
const CONVERSION_PREFIXES: usize = 10;
/// Minutes kept for the charts.
pub const MINUTES: usize = 180;
/// Decisions kept for the recent list.
pub const RECENT: usize = 1_000;
/// Distinct prefixes or regions counted; later newcomers are not (the
/// heavy hitters of an attack arrive early and stay counted).
const TOP_TABLE: usize = 10_000;
const ACTIONS: [&str; 4] = ["allow", "shadow", "reject", "monitor"];

/// One decision as the admin API lists it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    pub time: Millis,
    pub endpoint: &'static str,
    pub account: String,
    pub to: String,
    pub region: String,
    pub prefix: String,
    pub client_ip: String,
    pub user: String,
    pub stage: String,
    pub rule: String,
    pub action: &'static str,
    /// The rule's figures as the decision log has them (`prefix:8=+99899394`
    /// for a block, `... 4 attempts, rate 3/10m; blocked for 12h (offence 1)`
    /// for a tripped limit); numbers masked as the log masks them.
    pub detail: String,
    /// The number proved receipt recently: adaptive rules let it pass.
    pub vouched: bool,
    /// One message to many numbers, sent by the app itself: adaptive
    /// rules neither counted nor judged it.
    pub broadcast: bool,
}

struct Minute {
    start: Millis,
    actions: [u32; 4],
    regions: HashMap<String, u32>,
}

/// Counts per hour over the last `HOURS` hours: `N` counters in a ring
/// indexed by the hour since the epoch, so a key costs the same whether it
/// saw one send or a million (8 + 96 × N bytes).
#[derive(Debug, Clone)]
struct Hourly<const N: usize> {
    /// The newest hour written; its slot and the `HOURS - 1` slots before
    /// it hold that many hours, older ones were zeroed when passed.
    last: u64,
    slots: [[u32; N]; HOURS],
}

impl<const N: usize> Hourly<N> {
    fn new(hour: u64) -> Self {
        Hourly {
            last: hour,
            slots: [[0; N]; HOURS],
        }
    }

    /// Counts one on counter `i` in `hour` (a clock stepped back counts in
    /// the newest hour written).
    fn add(&mut self, hour: u64, i: usize) {
        if hour > self.last {
            let passed = (hour - self.last).min(HOURS as u64);
            for h in hour + 1 - passed..=hour {
                self.slots[(h % HOURS as u64) as usize] = [0; N];
            }
            self.last = hour;
        }
        let slot = &mut self.slots[(self.last % HOURS as u64) as usize][i];
        *slot = slot.saturating_add(1);
    }

    /// The sums over the `HOURS` hours up to `hour`.
    fn sum(&self, hour: u64) -> [u64; N] {
        let mut out = [0u64; N];
        let end = hour.max(self.last);
        let first = (end + 1).saturating_sub(HOURS as u64);
        if self.last < first {
            return out;
        }
        for h in first..=self.last {
            for (o, c) in out.iter_mut().zip(self.slots[(h % HOURS as u64) as usize]) {
                *o += u64::from(c);
            }
        }
        out
    }

    /// Nothing counted within the last `HOURS` hours.
    fn stale(&self, hour: u64) -> bool {
        self.last + (HOURS as u64) <= hour
    }
}

/// Forwarded and confirmed sends of one region or prefix.
const FORWARDED: usize = 0;
const CONFIRMED: usize = 1;
/// Confirmations no forwarded send awaited (counted in the totals only).
const UNMATCHED: usize = 2;
/// Per adaptive rule: the signal tripping (stage `adaptive`), sends it and
/// its blocks stopped, and sends only monitored.
const TRIPS: usize = 0;
const STOPPED: usize = 1;
const MONITORED: usize = 2;

/// A bounded table of hourly counts. Full, it first forgets keys idle for
/// a whole day (at most once an hour, so a flood of newcomers costs one
/// sweep an hour); newcomers that still find no room are not counted (the
/// heavy hitters of an attack arrive early and stay counted).
struct Table<const N: usize> {
    rows: HashMap<String, Hourly<N>>,
    cap: usize,
    swept: u64,
}

impl<const N: usize> Table<N> {
    fn new(cap: usize) -> Self {
        Table {
            rows: HashMap::new(),
            cap,
            swept: 0,
        }
    }

    fn add(&mut self, key: &str, hour: u64, i: usize) {
        if let Some(r) = self.rows.get_mut(key) {
            r.add(hour, i);
            return;
        }
        if self.rows.len() >= self.cap && self.swept < hour {
            self.swept = hour;
            self.rows.retain(|_, r| !r.stale(hour));
        }
        if self.rows.len() < self.cap {
            let mut r = Hourly::new(hour);
            r.add(hour, i);
            self.rows.insert(key.to_string(), r);
        }
    }

    /// Every key's sums over the window, keys with nothing in it left out.
    fn sums(&self, hour: u64) -> impl Iterator<Item = (&str, [u64; N])> {
        self.rows
            .iter()
            .map(move |(k, r)| (k.as_str(), r.sum(hour)))
            .filter(|(_, s)| s.iter().any(|c| *c > 0))
    }
}

struct Conversions {
    totals: Hourly<3>,
    regions: Table<2>,
    prefixes: Table<2>,
    rules: Table<3>,
}

impl Default for Conversions {
    fn default() -> Self {
        Conversions {
            totals: Hourly::new(0),
            regions: Table::new(TOP_TABLE),
            prefixes: Table::new(TOP_TABLE),
            rules: Table::new(RULES),
        }
    }
}

impl Conversions {
    /// A decision in `hour`: a forwarded send by region and prefix, an
    /// adaptive rule's trip and what became of the send it stopped.
    fn count(&mut self, e: &DecisionEvent, region: &str, hour: u64) {
        if matches!(e.action, "allow" | "monitor") {
            self.totals.add(hour, FORWARDED);
            if !region.is_empty() {
                self.regions.add(region, hour, FORWARDED);
            }
            if let Some(p) = e.prefix.as_deref().filter(|p| !p.is_empty()) {
                self.prefixes.add(p, hour, FORWARDED);
            }
        }
        if let Some(rule) = e.rule.as_deref().filter(|r| r.starts_with("adaptive:")) {
            if e.stage == Some("adaptive") {
                self.rules.add(rule, hour, TRIPS);
            }
            match e.action {
                "shadow" | "reject" => self.rules.add(rule, hour, STOPPED),
                "monitor" => self.rules.add(rule, hour, MONITORED),
                _ => {}
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<Record>,
    minutes: VecDeque<Minute>,
    totals: [u64; 4],
    blocked_prefixes: HashMap<String, u64>,
    blocked_regions: HashMap<String, u64>,
    conversion: Conversions,
    money: Money,
}

impl Inner {
    /// Counts a decision of action `ai` for `region` in the minute of
    /// `now`, starting that minute (and dropping the oldest past
    /// `MINUTES`) if it is new.
    fn count_minute(&mut self, now: Millis, ai: usize, region: &str) {
        let start = now - now % MINUTE;
        if self.minutes.back().is_none_or(|m| m.start < start) {
            self.minutes.push_back(Minute {
                start,
                actions: [0; 4],
                regions: HashMap::new(),
            });
            while self.minutes.len() > MINUTES {
                self.minutes.pop_front();
            }
        }
        if let Some(m) = self.minutes.back_mut() {
            m.actions[ai] += 1;
            if !region.is_empty() {
                match m.regions.get_mut(region) {
                    Some(n) => *n += 1,
                    None => {
                        m.regions.insert(region.to_string(), 1);
                    }
                }
            }
        }
    }

    /// Puts the decision first in the ring of recent ones.
    fn push_recent(&mut self, e: &DecisionEvent, region: &str, now: Millis) {
        // A full ring gives its oldest record's buffers to the newest: no
        // allocation per decision once the ring has filled.
        let mut r = if self.recent.len() >= RECENT {
            self.recent.pop_back().unwrap_or_default()
        } else {
            Record::default()
        };
        let set = |field: &mut String, value: Option<&str>| {
            field.clear();
            field.push_str(value.unwrap_or_default());
        };
        r.time = now;
        r.endpoint = e.endpoint;
        set(&mut r.account, e.account.as_deref());
        set(&mut r.to, e.to.as_deref());
        set(&mut r.region, Some(region));
        set(&mut r.prefix, e.prefix.as_deref());
        set(&mut r.client_ip, Some(&e.client_ip));
        set(&mut r.user, e.user.as_deref());
        set(&mut r.stage, e.stage);
        set(&mut r.rule, e.rule.as_deref());
        set(&mut r.detail, e.detail.as_deref());
        r.action = e.action;
        r.vouched = e.vouched;
        r.broadcast = e.broadcast;
        self.recent.push_front(r);
        self.recent.truncate(RECENT);
    }
}

/// Money per hour over the last `HOURS` hours, in millionths of the
/// policy's currency: what forwarded sends cost (spent) and what stopped
/// ones would have cost (saved), at the policy's prices.
#[derive(Debug, Clone, Default)]
struct Money {
    last: u64,
    slots: [[u64; 2]; HOURS],
}

const SPENT: usize = 0;
const SAVED: usize = 1;

impl Money {
    fn add(&mut self, hour: u64, i: usize, amount: u64) {
        if hour > self.last {
            let passed = (hour - self.last).min(HOURS as u64);
            for h in hour + 1 - passed..=hour {
                self.slots[(h % HOURS as u64) as usize] = [0; 2];
            }
            self.last = hour;
        }
        let slot = &mut self.slots[(self.last % HOURS as u64) as usize][i];
        *slot = slot.saturating_add(amount);
    }

    fn sum(&self, hour: u64) -> [u64; 2] {
        let first = (hour.max(self.last) + 1).saturating_sub(HOURS as u64);
        let mut out = [0u64; 2];
        if self.last < first {
            return out;
        }
        for h in first..=self.last {
            let s = self.slots[(h % HOURS as u64) as usize];
            out[0] += s[0];
            out[1] += s[1];
        }
        out
    }
}

/// Money over the last day (the current hour and the 23 before it), in
/// millionths of the policy's currency; `priced` when the policy has
/// prices (`[budget]`): without, both read 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MoneySummary {
    pub since: Millis,
    /// What forwarded sends cost.
    pub spent: u64,
    /// What stopped sends (shadowed, rejected) would have cost.
    pub saved: u64,
    pub priced: bool,
}

#[derive(Default)]
pub struct Activity {
    inner: Mutex<Inner>,
}

/// Filters of the recent-decisions list.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub action: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub now: Millis,
    pub minute_ms: Millis,
    pub minutes: Vec<Millis>,
    pub by_action: HashMap<String, Vec<u32>>,
    pub by_region: HashMap<String, Vec<u32>>,
    pub totals: HashMap<String, u64>,
    pub top_blocked_prefixes: Vec<Count>,
    pub top_blocked_regions: Vec<Count>,
    pub conversion: Conversion,
    #[serde(default)]
    pub money: MoneySummary,
    /// Replicas whose activity this adds up (1 without a shared store).
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

/// Forwarded sends (`allow`, `monitor`) against confirmed ones over the
/// last day, in whole hours: the current hour and the 23 before it.
/// Confirmations come seconds to minutes after their sends (and count in
/// the hour they arrive), so the newest sends read as unconfirmed for a
/// while.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversion {
    /// Whether the policy takes confirmations at all (`[adaptive]`); the
    /// admin API fills it in. Without, every rate reads 0.
    pub adaptive: bool,
    /// Start of the oldest hour counted.
    pub since: Millis,
    pub forwarded: u64,
    pub confirmed: u64,
    /// Confirmations no forwarded send awaited (not in any rate).
    pub unmatched: u64,
    pub rate: Option<f64>,
    /// The regions with the most forwarded sends.
    pub by_region: Vec<ConversionRow>,
    /// The prefixes (`log.prefix_digits`) with the most unconfirmed
    /// forwarded sends.
    pub top_prefixes: Vec<ConversionRow>,
    /// Decisions under an adaptive rule, by rule, most first.
    pub adaptive_blocks: Vec<RuleCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversionRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub forwarded: u64,
    pub confirmed: u64,
    /// confirmed / forwarded (at most 1: a confirmation may arrive for a
    /// send older than the window), null when nothing was forwarded.
    pub rate: Option<f64>,
}

/// One adaptive rule (`adaptive:unconfirmed:prefix:7`) over the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleCount {
    pub rule: String,
    /// Times the signal tripped (and set or extended a block).
    pub trips: u64,
    /// Sends shadowed or rejected under it: the trips and the sends its
    /// blocks stopped afterwards.
    pub stopped: u64,
    /// Sends under it that were only monitored (forwarded).
    pub monitored: u64,
}

fn rate(forwarded: u64, confirmed: u64) -> Option<f64> {
    (forwarded > 0).then(|| {
        let r = (confirmed as f64 / forwarded as f64).min(1.0);
        (r * 10_000.0).round() / 10_000.0
    })
}

fn action_index(a: &str) -> Option<usize> {
    ACTIONS.iter().position(|x| *x == a)
}

fn bump(table: &mut HashMap<String, u64>, key: &str) {
    if let Some(c) = table.get_mut(key) {
        *c += 1;
    } else if table.len() < TOP_TABLE {
        table.insert(key.to_string(), 1);
    }
}

/// Shortest prefix a spread of blocked prefixes is rolled up to: a
/// country code and a digit or two (`+9989`), never a whole country.
const ROLLUP_MIN: usize = 5;

/// Blocked prefixes rolled up to the range that holds them. A prefix goes
/// into the widest range above it (down to [`ROLLUP_MIN`]) whose blocked
/// prefixes are spread: at least three, none holding half the range's
/// sends. That range is shown as the longest prefix its members share, so a
/// flood over `+99890…` is one row (`+99890`), not many rows of one or two
/// sends; a prefix hammered on its own keeps its row.
fn rolled_up(table: &HashMap<String, u64>) -> HashMap<String, u64> {
    let longest = table.keys().map(String::len).max().unwrap_or(0);
    // Per range length: range -> (sends, largest member, members).
    let mut ranges: Vec<HashMap<&str, (u64, u64, usize)>> = Vec::new();
    for len in ROLLUP_MIN..longest {
        let mut m: HashMap<&str, (u64, u64, usize)> = HashMap::new();
        for (p, c) in table {
            if p.len() > len && p.is_ascii() {
                let e = m.entry(&p[..len]).or_default();
                e.0 += c;
                e.1 = e.1.max(*c);
                e.2 += 1;
            }
        }
        ranges.push(m);
    }
    let spread = |&(total, largest, n): &(u64, u64, usize)| n >= 3 && largest * 2 < total;
    // The range each prefix goes into, and what its members share.
    let mut groups: HashMap<&str, (String, u64)> = HashMap::new();
    let mut out: HashMap<String, u64> = HashMap::new();
    for (p, c) in table {
        let range = ranges.iter().enumerate().find_map(|(i, m)| {
            let r = p.get(..ROLLUP_MIN + i)?;
            m.get(r).filter(|v| spread(v)).map(|_| r)
        });
        match range {
            Some(r) => {
                let g = groups.entry(r).or_insert_with(|| (p.clone(), 0));
                let shared =
                    g.0.bytes()
                        .zip(p.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                g.0.truncate(shared);
                g.1 += c;
            }
            None => *out.entry(p.clone()).or_default() += c,
        }
    }
    for (_, (shared, c)) in groups {
        *out.entry(shared).or_default() += c;
    }
    out
}

fn top(table: &HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = table.iter().map(|(k, c)| (k.clone(), *c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

impl Activity {
    pub fn record(&self, e: &DecisionEvent, now: Millis) {
        let Some(ai) = action_index(e.action) else {
            return;
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let region = e.region.as_deref().unwrap_or_default();
        g.count_minute(now, ai, region);
        g.totals[ai] += 1;
        if let Some(price) = e.price {
            let which = if matches!(e.action, "shadow" | "reject") {
                SAVED
            } else {
                SPENT
            };
            g.money.add(now / HOUR, which, price);
        }
        if matches!(e.action, "shadow" | "reject") {
            if let Some(p) = &e.prefix {
                bump(&mut g.blocked_prefixes, p);
            }
            if !region.is_empty() {
                bump(&mut g.blocked_regions, region);
            }
        }
        g.conversion.count(e, region, now / HOUR);
        g.push_recent(e, region, now);
    }

    /// A confirmation for a number in `region` (`None`: no region, shown as
    /// `none` like the decisions) under `prefix`; `matched` when a forwarded
    /// send awaited it. It counts in the hour it arrives.
    pub fn confirmed(&self, region: Option<&str>, prefix: &str, matched: bool, now: Millis) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let hour = now / HOUR;
        let c = &mut g.conversion;
        if !matched {
            c.totals.add(hour, UNMATCHED);
            return;
        }
        c.totals.add(hour, CONFIRMED);
        c.regions.add(region.unwrap_or("none"), hour, CONFIRMED);
        if !prefix.is_empty() {
            c.prefixes.add(prefix, hour, CONFIRMED);
        }
    }

    pub fn recent(&self, f: &Filter) -> Vec<Record> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.recent
            .iter()
            .filter(|r| f.action.as_deref().is_none_or(|a| r.action == a))
            .filter(|r| {
                f.region
                    .as_deref()
                    .is_none_or(|x| r.region.eq_ignore_ascii_case(x))
            })
            .filter(|r| {
                f.prefix
                    .as_deref()
                    .is_none_or(|p| r.to.starts_with(p) || r.prefix.starts_with(p))
            })
            .take(f.limit.clamp(1, RECENT))
            .cloned()
            .collect()
    }

    /// The charts' data: one slot per minute for the last `MINUTES`
    /// minutes, oldest first, empty minutes included.
    pub fn summary(&self, now: Millis) -> Summary {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let last = now - now % MINUTE;
        let first = last.saturating_sub((MINUTES as Millis - 1) * MINUTE);
        let minutes: Vec<Millis> = (0..MINUTES as Millis).map(|i| first + i * MINUTE).collect();
        let slot = |start: Millis| -> Option<usize> {
            (start >= first && start <= last).then(|| ((start - first) / MINUTE) as usize)
        };
        let mut by_action: HashMap<String, Vec<u32>> = ACTIONS
            .iter()
            .map(|a| (a.to_string(), vec![0; MINUTES]))
            .collect();
        let mut region_totals: HashMap<&str, u64> = HashMap::new();
        for m in &g.minutes {
            if slot(m.start).is_some() {
                for (r, c) in &m.regions {
                    *region_totals.entry(r.as_str()).or_default() += u64::from(*c);
                }
            }
        }
        let mut regions: Vec<(&str, u64)> = region_totals.into_iter().collect();
        regions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        regions.truncate(12);
        let mut by_region: HashMap<String, Vec<u32>> = regions
            .iter()
            .map(|(r, _)| (r.to_string(), vec![0; MINUTES]))
            .collect();
        for m in &g.minutes {
            let Some(i) = slot(m.start) else { continue };
            for (ai, a) in ACTIONS.iter().enumerate() {
                if let Some(v) = by_action.get_mut(*a) {
                    v[i] = m.actions[ai];
                }
            }
            for (r, v) in by_region.iter_mut() {
                v[i] = m.regions.get(r).copied().unwrap_or(0);
            }
        }
        let conversion = conversion(&g.conversion, now);
        let [spent, saved] = g.money.sum(now / HOUR);
        let money = MoneySummary {
            since: (now / HOUR + 1).saturating_sub(HOURS as u64) * HOUR,
            spent,
            saved,
            priced: false,
        };
        Summary {
            now,
            minute_ms: MINUTE,
            minutes,
            by_action,
            by_region,
            totals: ACTIONS
                .iter()
                .zip(g.totals)
                .map(|(a, t)| (a.to_string(), t))
                .collect(),
            top_blocked_prefixes: top(&rolled_up(&g.blocked_prefixes), 10)
                .into_iter()
                .map(|(p, count)| Count {
                    prefix: Some(p),
                    region: None,
                    count,
                })
                .collect(),
            top_blocked_regions: top(&g.blocked_regions, 10)
                .into_iter()
                .map(|(r, count)| Count {
                    prefix: None,
                    region: Some(r),
                    count,
                })
                .collect(),
            conversion,
            money,
            replicas: 1,
        }
    }

    /// Per region: sends in the current minute and the average per minute
    /// over the `window` minutes before it (for spike alerts).
    pub fn region_rates(&self, now: Millis, window: usize) -> Vec<(String, u32, f64)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let current = now - now % MINUTE;
        let Some(cur) = g.minutes.back().filter(|m| m.start == current) else {
            return Vec::new();
        };
        let earliest = current.saturating_sub(window as Millis * MINUTE);
        let before: Vec<&Minute> = g
            .minutes
            .iter()
            .filter(|m| m.start < current && m.start >= earliest)
            .collect();
        cur.regions
            .iter()
            .map(|(r, c)| {
                let sum: u64 = before
                    .iter()
                    .map(|m| u64::from(m.regions.get(r).copied().unwrap_or(0)))
                    .sum();
                (r.clone(), *c, sum as f64 / window.max(1) as f64)
            })
            .collect()
    }
}

fn conversion(c: &Conversions, now: Millis) -> Conversion {
    let hour = now / HOUR;
    let [forwarded, confirmed, unmatched] = c.totals.sum(hour);
    let row = |key: &str, [f, k]: [u64; 2], region: bool| ConversionRow {
        region: region.then(|| key.to_string()),
        prefix: (!region).then(|| key.to_string()),
        forwarded: f,
        confirmed: k,
        rate: rate(f, k),
    };
    let mut regions: Vec<(&str, [u64; 2])> = c.regions.sums(hour).collect();
    regions.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then(a.0.cmp(b.0)));
    regions.truncate(CONVERSION_REGIONS);
    // The most unconfirmed first; among equals the worse rate.
    let unconfirmed = |s: &[u64; 2]| s[0].saturating_sub(s[1]);
    let mut prefixes: Vec<(&str, [u64; 2])> = c
        .prefixes
        .sums(hour)
        .filter(|(_, s)| unconfirmed(s) > 0)
        .collect();
    prefixes.sort_by(|a, b| {
        unconfirmed(&b.1)
            .cmp(&unconfirmed(&a.1))
            .then(
                (u128::from(a.1[1]) * u128::from(b.1[0]))
                    .cmp(&(u128::from(b.1[1]) * u128::from(a.1[0]))),
            )
            .then(a.0.cmp(b.0))
    });
    prefixes.truncate(CONVERSION_PREFIXES);
    let mut rules: Vec<(&str, [u64; 3])> = c.rules.sums(hour).collect();
    rules.sort_by(|a, b| {
        (b.1[STOPPED] + b.1[MONITORED])
            .cmp(&(a.1[STOPPED] + a.1[MONITORED]))
            .then(a.0.cmp(b.0))
    });
    Conversion {
        adaptive: false,
        since: (hour + 1).saturating_sub(HOURS as u64) * HOUR,
        forwarded,
        confirmed,
        unmatched,
        rate: rate(forwarded, confirmed),
        by_region: regions.into_iter().map(|(k, s)| row(k, s, true)).collect(),
        top_prefixes: prefixes
            .into_iter()
            .map(|(k, s)| row(k, s, false))
            .collect(),
        adaptive_blocks: rules
            .into_iter()
            .map(|(r, s)| RuleCount {
                rule: r.to_string(),
                trips: s[TRIPS],
                stopped: s[STOPPED],
                monitored: s[MONITORED],
            })
            .collect(),
    }
}

/// The fleet's activity: several replicas' summaries added up, minute by
/// minute on the minutes of the newest (`parts` must not be empty).
pub fn merge(mut parts: Vec<Summary>) -> Summary {
    parts.sort_by_key(|p| std::cmp::Reverse(p.now));
    let mut out = parts.remove(0);
    let index: HashMap<Millis, usize> = out
        .minutes
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, i))
        .collect();
    let add_series = |into: &mut HashMap<String, Vec<u32>>,
                      minutes: &[Millis],
                      from: &HashMap<String, Vec<u32>>| {
        for (k, v) in from {
            let series = into
                .entry(k.clone())
                .or_insert_with(|| vec![0; index.len()]);
            for (m, c) in minutes.iter().zip(v) {
                if let Some(i) = index.get(m) {
                    series[*i] = series[*i].saturating_add(*c);
                }
            }
        }
    };
    let add_counts = |into: &mut Vec<Count>, from: &[Count]| {
        for c in from {
            match into
                .iter_mut()
                .find(|x| x.prefix == c.prefix && x.region == c.region)
            {
                Some(x) => x.count += c.count,
                None => into.push(c.clone()),
            }
        }
        into.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.prefix.cmp(&b.prefix))
                .then(a.region.cmp(&b.region))
        });
        into.truncate(10);
    };
    let add_rows = |into: &mut Vec<ConversionRow>, from: &[ConversionRow]| {
        for r in from {
            match into
                .iter_mut()
                .find(|x| x.prefix == r.prefix && x.region == r.region)
            {
                Some(x) => {
                    x.forwarded += r.forwarded;
                    x.confirmed += r.confirmed;
                    x.rate = rate(x.forwarded, x.confirmed);
                }
                None => into.push(r.clone()),
            }
        }
    };
    for p in parts {
        add_series(&mut out.by_action, &p.minutes, &p.by_action);
        add_series(&mut out.by_region, &p.minutes, &p.by_region);
        for (k, v) in p.totals {
            *out.totals.entry(k).or_default() += v;
        }
        add_counts(&mut out.top_blocked_prefixes, &p.top_blocked_prefixes);
        add_counts(&mut out.top_blocked_regions, &p.top_blocked_regions);
        let (c, pc) = (&mut out.conversion, p.conversion);
        c.adaptive |= pc.adaptive;
        c.since = c.since.min(pc.since);
        c.forwarded += pc.forwarded;
        c.confirmed += pc.confirmed;
        c.unmatched += pc.unmatched;
        c.rate = rate(c.forwarded, c.confirmed);
        add_rows(&mut c.by_region, &pc.by_region);
        add_rows(&mut c.top_prefixes, &pc.top_prefixes);
        for r in pc.adaptive_blocks {
            match c.adaptive_blocks.iter_mut().find(|x| x.rule == r.rule) {
                Some(x) => {
                    x.trips += r.trips;
                    x.stopped += r.stopped;
                    x.monitored += r.monitored;
                }
                None => c.adaptive_blocks.push(r),
            }
        }
        out.money.spent += p.money.spent;
        out.money.saved += p.money.saved;
        out.money.since = out.money.since.min(p.money.since);
        out.money.priced |= p.money.priced;
        out.replicas += p.replicas;
    }
    // The busiest regions, as one replica would keep them.
    if out.by_region.len() > 12 {
        let mut sums: Vec<(String, u64)> = out
            .by_region
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|c| u64::from(*c)).sum()))
            .collect();
        sums.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let keep: std::collections::HashSet<String> =
            sums.into_iter().take(12).map(|(k, _)| k).collect();
        out.by_region.retain(|k, _| keep.contains(k));
    }
    let c = &mut out.conversion;
    c.by_region
        .sort_by(|a, b| b.forwarded.cmp(&a.forwarded).then(a.region.cmp(&b.region)));
    c.by_region.truncate(CONVERSION_REGIONS);
    c.top_prefixes.sort_by(|a, b| {
        (b.forwarded - b.confirmed.min(b.forwarded))
            .cmp(&(a.forwarded - a.confirmed.min(a.forwarded)))
            .then(a.prefix.cmp(&b.prefix))
    });
    c.top_prefixes.truncate(CONVERSION_PREFIXES);
    c.adaptive_blocks.sort_by(|a, b| {
        (b.stopped + b.monitored)
            .cmp(&(a.stopped + a.monitored))
            .then(a.rule.cmp(&b.rule))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &'static str, region: &str, prefix: &str) -> DecisionEvent {
        DecisionEvent {
            endpoint: "messages.create",
            action,
            region: Some(region.into()),
            prefix: Some(prefix.into()),
            to: Some(format!("{prefix}1234")),
            ..Default::default()
        }
    }

    #[test]
    fn a_flood_spread_over_a_range_is_one_row_and_a_hammered_prefix_keeps_its_own() {
        let a = Activity::default();
        let t0 = 1_700_000_000_000;
        // 40 sends over +99890…, one or two per 8-digit prefix.
        for i in 0..40u64 {
            let p = format!("+99890{:03}", (i * 37) % 1000);
            a.record(&event("shadow", "UZ", &p), t0 + i);
        }
        // 12 sends to one UK block, and one stray neighbour.
        for i in 0..12 {
            a.record(&event("shadow", "GB", "+44740012"), t0 + 100 + i);
        }
        a.record(&event("shadow", "GB", "+44740013"), t0 + 200);
        let s = a.summary(t0 + 300);
        let rows: Vec<(Option<&str>, u64)> = s
            .top_blocked_prefixes
            .iter()
            .map(|c| (c.prefix.as_deref(), c.count))
            .collect();
        assert_eq!(
            rows,
            [
                (Some("+99890"), 40),
                (Some("+44740012"), 12),
                (Some("+44740013"), 1)
            ]
        );
    }

    #[test]
    fn minutes_totals_and_top_blocked_are_aggregated_as_decisions_arrive() {
        let a = Activity::default();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE;
        for i in 0..30 {
            a.record(&event("shadow", "UZ", "+99899394"), t0 + i);
        }
        a.record(&event("allow", "US", "+14155550"), t0 + MINUTE);
        let s = a.summary(t0 + MINUTE + 5);
        assert_eq!(s.minutes.len(), MINUTES);
        assert_eq!(*s.minutes.last().unwrap(), t0 + MINUTE);
        assert_eq!(s.by_action["shadow"][MINUTES - 2], 30);
        assert_eq!(s.by_action["allow"][MINUTES - 1], 1);
        assert_eq!(s.by_region["UZ"][MINUTES - 2], 30);
        assert_eq!(s.totals["shadow"], 30);
        assert_eq!(
            s.top_blocked_prefixes[0].prefix.as_deref(),
            Some("+99899394")
        );
        assert_eq!(s.top_blocked_regions[0].count, 30);
        let f = Filter {
            action: Some("allow".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(a.recent(&f).len(), 1);
        let f = Filter {
            prefix: Some("+998".into()),
            limit: 5,
            ..Default::default()
        };
        assert_eq!(a.recent(&f).len(), 5);
        // Three hours later the old minutes have left the window.
        let later = a.summary(t0 + 4 * 60 * MINUTE);
        assert_eq!(later.by_action["shadow"].iter().sum::<u32>(), 0);
    }

    #[test]
    fn a_full_ring_reuses_old_records_without_leaking_their_fields() {
        let a = Activity::default();
        // Fill the ring with decisions that have every field set...
        for i in 0..RECENT as u64 {
            let mut e = event("shadow", "UZ", "+99899394");
            e.user = Some(format!("user{i}"));
            e.stage = Some("number");
            e.rule = Some("geo:UZ".into());
            a.record(&e, 1_000 + i);
        }
        // ...then push them out with decisions that have few.
        for i in 0..5u64 {
            let mut e = event("allow", "US", &format!("+1415555{i}"));
            e.region = None;
            a.record(&e, 10_000_000 + i);
        }
        let f = Filter {
            limit: 6,
            ..Default::default()
        };
        let r = a.recent(&f);
        assert_eq!(r.len(), 6);
        for (k, rec) in r[..5].iter().enumerate() {
            let i = 4 - k as u64;
            assert_eq!(rec.time, 10_000_000 + i);
            assert_eq!(rec.action, "allow");
            assert_eq!(rec.to, format!("+1415555{i}1234"));
            assert_eq!(rec.prefix, format!("+1415555{i}"));
            assert_eq!(
                (
                    rec.user.as_str(),
                    rec.stage.as_str(),
                    rec.rule.as_str(),
                    rec.region.as_str()
                ),
                ("", "", "", ""),
                "fields of the reused record leaked"
            );
        }
        assert_eq!(r[5].user, format!("user{}", RECENT - 1));
        assert_eq!(r[5].rule, "geo:UZ");
        assert_eq!(a.inner.lock().unwrap().recent.len(), RECENT);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let a = Activity::default();
        for i in 0..(RECENT as u64 * 3) {
            a.record(
                &event("shadow", "UZ", &format!("+{i:08}")),
                1_000 + i * 1_000,
            );
        }
        let g = a.inner.lock().unwrap();
        assert!(g.recent.len() <= RECENT && g.minutes.len() <= MINUTES);
        assert!(g.blocked_prefixes.len() <= TOP_TABLE);
    }

    fn adaptive(action: &'static str, stage: &'static str, rule: &str) -> DecisionEvent {
        let mut e = event(action, "GB", "+44791112");
        e.stage = Some(stage);
        e.rule = Some(rule.into());
        e
    }

    #[test]
    fn conversion_counts_forwarded_and_confirmed_per_region_and_prefix_over_a_day() {
        let a = Activity::default();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR;
        // GB: 10 forwarded (8 allowed, 2 monitored), 3 confirmed; 5 shadowed
        // never count as forwarded.
        for i in 0..8 {
            a.record(&event("allow", "GB", "+44791112"), t0 + i);
        }
        for i in 0..2 {
            a.record(&event("monitor", "GB", "+44740012"), t0 + 10 + i);
        }
        for i in 0..5 {
            a.record(&event("shadow", "GB", "+44791112"), t0 + 20 + i);
        }
        for _ in 0..3 {
            a.confirmed(Some("GB"), "+44791112", true, t0 + 60_000);
        }
        // US: 4 forwarded, all confirmed; one more confirmation for a send
        // older than the window does not push the rate over 1.
        for i in 0..4 {
            a.record(&event("allow", "US", "+14155550"), t0 + 30 + i);
            a.confirmed(Some("US"), "+14155550", true, t0 + 90_000 + i);
        }
        a.confirmed(Some("US"), "+14155550", true, t0 + 95_000);
        // A confirmation nothing awaited counts only as unmatched; one
        // without a region counts as `none`, as decisions show it.
        a.confirmed(Some("CA"), "+14165550", false, t0 + 96_000);
        a.confirmed(None, "+88234567", true, t0 + 97_000);

        let c = a.summary(t0 + 2 * HOUR).conversion;
        assert_eq!((c.forwarded, c.confirmed, c.unmatched), (14, 9, 1));
        assert_eq!(c.since, t0 + 3 * HOUR - HOURS as Millis * HOUR);
        let regions: Vec<(&str, u64, u64, Option<f64>)> = c
            .by_region
            .iter()
            .map(|r| {
                (
                    r.region.as_deref().unwrap(),
                    r.forwarded,
                    r.confirmed,
                    r.rate,
                )
            })
            .collect();
        assert_eq!(
            regions,
            vec![
                ("GB", 10, 3, Some(0.3)),
                ("US", 4, 5, Some(1.0)),
                ("none", 0, 1, None)
            ]
        );
        let prefixes: Vec<(&str, u64, u64)> = c
            .top_prefixes
            .iter()
            .map(|r| (r.prefix.as_deref().unwrap(), r.forwarded, r.confirmed))
            .collect();
        assert_eq!(
            prefixes,
            vec![("+44791112", 8, 3), ("+44740012", 2, 0)],
            "most unconfirmed first; fully confirmed prefixes left out"
        );
        assert!(c.top_prefixes.iter().all(|r| r.region.is_none()));

        // 23 hours later the first hour is still in; 24 hours later it is not.
        let c = a.summary(t0 + 23 * HOUR + HOUR - 1).conversion;
        assert_eq!((c.forwarded, c.confirmed), (14, 9));
        let c = a.summary(t0 + 24 * HOUR).conversion;
        assert_eq!((c.forwarded, c.confirmed, c.unmatched), (0, 0, 0));
        assert!(c.by_region.is_empty() && c.top_prefixes.is_empty());
        assert_eq!(c.rate, None);
        // New counts after a long gap start from zero, not from stale slots.
        a.record(&event("allow", "GB", "+44791112"), t0 + 30 * HOUR);
        let c = a.summary(t0 + 30 * HOUR).conversion;
        assert_eq!(c.by_region[0].forwarded, 1);
        assert_eq!(c.by_region[0].confirmed, 0);
        assert_eq!(c.by_region[0].rate, Some(0.0));
    }

    #[test]
    fn adaptive_rules_are_counted_by_trips_stopped_and_monitored_sends() {
        let a = Activity::default();
        let t0 = 1_700_000_000_000;
        a.record(
            &adaptive("shadow", "adaptive", "adaptive:surge:prefix:7"),
            t0,
        );
        for i in 0..4 {
            a.record(
                &adaptive("shadow", "blocks", "adaptive:surge:prefix:7"),
                t0 + 1 + i,
            );
        }
        a.record(
            &adaptive("monitor", "adaptive", "adaptive:unconfirmed:prefix:8"),
            t0 + 9,
        );
        a.record(&adaptive("shadow", "limits", "prefix"), t0 + 10);
        let c = a.summary(t0 + 20).conversion;
        let rules: Vec<(&str, u64, u64, u64)> = c
            .adaptive_blocks
            .iter()
            .map(|r| (r.rule.as_str(), r.trips, r.stopped, r.monitored))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("adaptive:surge:prefix:7", 1, 5, 0),
                ("adaptive:unconfirmed:prefix:8", 1, 0, 1)
            ]
        );
        // The monitored send was forwarded.
        assert_eq!(c.forwarded, 1);
    }

    #[test]
    fn conversion_tables_stay_bounded_and_make_room_after_a_day() {
        let a = Activity::default();
        let t0 = 1_700_000_000_000;
        for i in 0..(TOP_TABLE as u64 + 500) {
            a.record(&event("allow", "GB", &format!("+{i:08}")), t0 + i);
        }
        a.confirmed(Some("GB"), "+99999999", true, t0 + HOUR);
        {
            let g = a.inner.lock().unwrap();
            assert_eq!(g.conversion.prefixes.rows.len(), TOP_TABLE);
            assert!(
                !g.conversion.prefixes.rows.contains_key("+99999999"),
                "a newcomer to a full table is not counted"
            );
        }
        // The totals and the region still count everything.
        let c = a.summary(t0 + HOUR).conversion;
        assert_eq!(c.forwarded, TOP_TABLE as u64 + 500);
        assert_eq!(c.by_region[0].confirmed, 1);
        assert_eq!(c.top_prefixes.len(), CONVERSION_PREFIXES);
        // A day later the idle prefixes are swept for a newcomer.
        a.record(&event("allow", "GB", "+44791112"), t0 + 25 * HOUR);
        let g = a.inner.lock().unwrap();
        assert_eq!(g.conversion.prefixes.rows.len(), 1);
        assert!(g.conversion.prefixes.rows.contains_key("+44791112"));
    }
}

//! What the dashboard and the admin API show: the last decisions (a bounded
//! ring) and sends per minute by decision and by region over the last
//! hours, aggregated as decisions happen so a burst of 10,000 a minute costs
//! the page nothing.
//!
//! Memory is bounded: a fixed number of minutes and recent decisions, and
//! bounded tables of blocked prefixes and regions.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use super::DecisionEvent;
use crate::clock::Millis;

const MINUTE: Millis = 60_000;
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
}

struct Minute {
    start: Millis,
    actions: [u32; 4],
    regions: HashMap<String, u32>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<Record>,
    minutes: VecDeque<Minute>,
    totals: [u64; 4],
    blocked_prefixes: HashMap<String, u64>,
    blocked_regions: HashMap<String, u64>,
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

#[derive(Debug, Serialize)]
pub struct Count {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub now: Millis,
    pub minute_ms: Millis,
    pub minutes: Vec<Millis>,
    pub by_action: HashMap<&'static str, Vec<u32>>,
    pub by_region: HashMap<String, Vec<u32>>,
    pub totals: HashMap<&'static str, u64>,
    pub top_blocked_prefixes: Vec<Count>,
    pub top_blocked_regions: Vec<Count>,
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
        let start = now - now % MINUTE;
        if g.minutes.back().is_none_or(|m| m.start < start) {
            g.minutes.push_back(Minute {
                start,
                actions: [0; 4],
                regions: HashMap::new(),
            });
            while g.minutes.len() > MINUTES {
                g.minutes.pop_front();
            }
        }
        let region = e.region.as_deref().unwrap_or_default();
        if let Some(m) = g.minutes.back_mut() {
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
        g.totals[ai] += 1;
        if matches!(e.action, "shadow" | "reject") {
            if let Some(p) = &e.prefix {
                bump(&mut g.blocked_prefixes, p);
            }
            if !region.is_empty() {
                bump(&mut g.blocked_regions, region);
            }
        }
        // A full ring gives its oldest record's buffers to the newest: no
        // allocation per decision once the ring has filled.
        let mut r = if g.recent.len() >= RECENT {
            g.recent.pop_back().unwrap_or_default()
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
        r.action = e.action;
        g.recent.push_front(r);
        g.recent.truncate(RECENT);
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
        let mut by_action: HashMap<&'static str, Vec<u32>> =
            ACTIONS.iter().map(|a| (*a, vec![0; MINUTES])).collect();
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
                if let Some(v) = by_action.get_mut(a) {
                    v[i] = m.actions[ai];
                }
            }
            for (r, v) in by_region.iter_mut() {
                v[i] = m.regions.get(r).copied().unwrap_or(0);
            }
        }
        Summary {
            now,
            minute_ms: MINUTE,
            minutes,
            by_action,
            by_region,
            totals: ACTIONS.iter().zip(g.totals).map(|(a, t)| (*a, t)).collect(),
            top_blocked_prefixes: top(&g.blocked_prefixes, 10)
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
}

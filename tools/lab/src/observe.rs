//! What the lab sees of the honest nodes while it runs: their event streams (blocks, finality,
//! bans) and their metrics once a second, kept with the time they arrived; and the live
//! one-line summary printed every second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, Endpoint};
use crate::prom::Metrics;
use crate::stats::Quantiles;

/// Events of each kind kept, at most (a lab makes a few tens of thousands).
pub const MAX_EVENTS: usize = 1_000_000;
/// Pause before reconnecting to a node's event stream (it may be restarting).
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
/// How often metrics are read and the live line printed.
pub const TICK: Duration = Duration::from_secs(1);
/// The window of the live line's rates and latency.
const LIVE_WINDOW: Duration = Duration::from_secs(5);
/// The node whose block events count committed transactions and blocks (never restarted).
pub const REFERENCE_NODE: usize = 0;

/// A block event.
#[derive(Debug, Clone)]
pub struct BlockSeen {
    /// Which honest node sent it.
    pub node: usize,
    /// When it arrived.
    pub at: Instant,
    /// Transactions in it.
    pub txs: u64,
}

/// A finality event.
#[derive(Debug, Clone)]
pub struct FinalitySeen {
    /// Which honest node sent it.
    pub node: usize,
    /// When it arrived.
    pub at: Instant,
    /// From the proposal to the commit on that node, ms.
    pub latency_ms: u64,
}

/// A ban event.
#[derive(Debug, Clone)]
pub struct BanSeen {
    /// Which honest node banned.
    pub node: usize,
    /// `peer <id>` or `address <net>`.
    pub target: String,
    /// The addresses it blocks.
    pub addresses: Vec<String>,
    /// The reason name.
    pub reason: String,
}

/// A node's metrics, with when they were read.
#[derive(Debug, Clone)]
pub struct MetricsSample {
    /// When.
    pub at: Instant,
    /// The samples.
    pub metrics: Metrics,
}

/// Everything observed so far.
#[derive(Debug, Default)]
pub struct Observed {
    /// Block events.
    pub blocks: Vec<BlockSeen>,
    /// Finality events.
    pub finality: Vec<FinalitySeen>,
    /// Ban events.
    pub bans: Vec<BanSeen>,
    /// The last two metrics readings of each node (previous, latest).
    pub metrics: Vec<(Option<MetricsSample>, Option<MetricsSample>)>,
    /// Highest block height each node announced.
    pub tips: Vec<u64>,
    /// Whether each node should be running now (the restart phase takes one down).
    pub up: Vec<bool>,
    /// The phase running and when it started.
    pub phase: Option<(String, Instant)>,
    /// Events the nodes said this lab missed (`lagged`), and events not kept past
    /// [`MAX_EVENTS`].
    pub missed: u64,
}

/// The observations, shared by the lab's tasks.
pub type Shared = Arc<Mutex<Observed>>;

/// A new shared record for `nodes` honest nodes.
pub fn shared(nodes: usize) -> Shared {
    Arc::new(Mutex::new(Observed {
        metrics: vec![(None, None); nodes],
        tips: vec![0; nodes],
        up: vec![true; nodes],
        ..Observed::default()
    }))
}

/// Locks the record; a task that panicked while holding it left data that is still readable.
pub fn lock(shared: &Shared) -> MutexGuard<'_, Observed> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The events of `list` that arrived in `[from, to)`, found by binary search: events are
/// appended in arrival order ([`Observed::record`]), so `list` is sorted by `at`.
fn window<T>(list: &[T], at: impl Fn(&T) -> Instant, from: Instant, to: Instant) -> &[T] {
    let start = list.partition_point(|e| at(e) < from);
    let end = list.partition_point(|e| at(e) < to).max(start);
    &list[start..end]
}

/// Appends `item` to `list` unless it holds [`MAX_EVENTS`] already (then counts it missed).
fn push<T>(list: &mut Vec<T>, missed: &mut u64, item: T) {
    if list.len() < MAX_EVENTS {
        list.push(item);
    } else {
        *missed += 1;
    }
}

impl Observed {
    /// Records one event (a JSON text message of node `node`'s stream) received at `at`, which
    /// is no earlier than the events recorded before: the event lists stay sorted by arrival
    /// time, which the windowed queries ([`Observed::committed`]) rely on.
    pub fn record(&mut self, node: usize, at: Instant, event: &Value) {
        let u64_of = |k: &str| event[k].as_u64().unwrap_or(0);
        match event["type"].as_str() {
            Some("block") => {
                let height = u64_of("height");
                if let Some(tip) = self.tips.get_mut(node) {
                    *tip = (*tip).max(height);
                }
                let seen = BlockSeen {
                    node,
                    at,
                    txs: u64_of("txs"),
                };
                push(&mut self.blocks, &mut self.missed, seen);
            }
            Some("finality") => {
                let seen = FinalitySeen {
                    node,
                    at,
                    latency_ms: u64_of("latency_ms"),
                };
                push(&mut self.finality, &mut self.missed, seen);
            }
            Some("ban") => {
                let seen = BanSeen {
                    node,
                    target: event["target"].as_str().unwrap_or_default().to_string(),
                    addresses: event["addresses"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    reason: event["reason"].as_str().unwrap_or_default().to_string(),
                };
                push(&mut self.bans, &mut self.missed, seen);
            }
            Some("lagged") => self.missed += u64_of("missed"),
            _ => {}
        }
    }

    /// The finality latencies (ms) of every node's finality events in `[from, to)`.
    pub fn latencies(&self, from: Instant, to: Instant) -> Vec<u64> {
        window(&self.finality, |f| f.at, from, to)
            .iter()
            .map(|f| f.latency_ms)
            .collect()
    }

    /// The finality latencies (ms) of node `node`'s finality events in `[from, to)`.
    pub fn node_latencies(&self, node: usize, from: Instant, to: Instant) -> Vec<u64> {
        window(&self.finality, |f| f.at, from, to)
            .iter()
            .filter(|f| f.node == node)
            .map(|f| f.latency_ms)
            .collect()
    }

    /// Blocks and transactions the reference node committed in `[from, to)`.
    pub fn committed(&self, from: Instant, to: Instant) -> (u64, u64) {
        window(&self.blocks, |b| b.at, from, to)
            .iter()
            .filter(|b| b.node == REFERENCE_NODE)
            .fold((0, 0), |(blocks, txs), b| (blocks + 1, txs + b.txs))
    }

    /// Kernel drops per second by reason over the nodes' last two readings (non-zero ones).
    fn drop_rates(&self) -> BTreeMap<String, f64> {
        let mut rates = BTreeMap::new();
        for (prev, last) in &self.metrics {
            let (Some(prev), Some(last)) = (prev, last) else {
                continue;
            };
            let secs = last.at.duration_since(prev.at).as_secs_f64();
            if secs <= 0.0 {
                continue;
            }
            let before =
                prev.metrics
                    .by_label("firewall_packets_total", "reason", &[("verdict", "drop")]);
            let after =
                last.metrics
                    .by_label("firewall_packets_total", "reason", &[("verdict", "drop")]);
            for (reason, value) in after {
                let delta = value - before.get(&reason).copied().unwrap_or(0.0);
                if delta > 0.0 {
                    *rates.entry(reason).or_insert(0.0) += delta / secs;
                }
            }
        }
        rates
    }

    /// Active bans by reason, summed over the nodes' latest readings (non-zero ones).
    pub fn active_bans(&self) -> BTreeMap<String, f64> {
        let mut bans = BTreeMap::new();
        for (_, last) in &self.metrics {
            let Some(last) = last else { continue };
            for (reason, value) in last.metrics.by_label("p2p_bans_active", "reason", &[]) {
                if value > 0.0 {
                    *bans.entry(reason).or_insert(0.0) += value;
                }
            }
        }
        bans
    }

    /// The live one-line summary at `now`.
    pub fn live_line(&self, now: Instant) -> String {
        let (phase, elapsed) = match &self.phase {
            Some((name, started)) => (name.as_str(), now.duration_since(*started).as_secs()),
            None => ("start", 0),
        };
        let tips: Vec<u64> = self
            .tips
            .iter()
            .zip(&self.up)
            .filter(|(_, up)| **up)
            .map(|(t, _)| *t)
            .collect();
        let min = tips.iter().min().copied().unwrap_or(0);
        let max = tips.iter().max().copied().unwrap_or(0);
        let from = now.checked_sub(LIVE_WINDOW).unwrap_or(now);
        let window = now.duration_since(from).as_secs_f64().max(1.0);
        let (blocks, txs) = self.committed(from, now);
        let p50 = Quantiles::of(&self.latencies(from, now)).p50_ms;
        let mut line = format!(
            "[{phase} {elapsed:>3}s] height {min}..{max}  {:.1} blk/s  finality p50 {p50} ms  {:.1} tx/s",
            blocks as f64 / window,
            txs as f64 / window
        );
        let drops = self.drop_rates();
        if !drops.is_empty() {
            line.push_str("  drops/s");
            for (reason, rate) in drops {
                line.push_str(&format!(" {reason}={rate:.0}"));
            }
        }
        let bans = self.active_bans();
        if !bans.is_empty() {
            line.push_str("  bans");
            for (reason, n) in bans {
                line.push_str(&format!(" {reason}={n}"));
            }
        }
        line
    }
}

/// Follows node `node`'s event stream until `stop`, reconnecting whenever it closes.
pub async fn watch_events(
    node: usize,
    endpoint: Endpoint,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let url = endpoint.events_url();
    while !*stop.borrow() {
        if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await {
            loop {
                let message = tokio::select! {
                    m = socket.next() => m,
                    _ = stop.changed() => return,
                };
                match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(event) = serde_json::from_str::<Value>(text.as_str()) {
                            // The time is taken under the lock, so events are recorded in
                            // the order of their times (see `Observed::record`).
                            let mut observed = lock(&shared);
                            let now = Instant::now();
                            observed.record(node, now, &event);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Reads every running node's metrics once a [`TICK`] and prints the live line, until `stop`.
pub async fn poll_and_print(
    client: Client,
    endpoints: Vec<Endpoint>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let up = lock(&shared).up.clone();
        let reads = endpoints.iter().zip(&up).map(|(e, up)| {
            let client = &client;
            async move {
                if *up {
                    client.metrics(e).await.ok()
                } else {
                    None
                }
            }
        });
        let readings = futures::future::join_all(reads).await;
        let now = Instant::now();
        let mut observed = lock(&shared);
        for (slot, reading) in observed.metrics.iter_mut().zip(readings) {
            match reading {
                Some(metrics) => {
                    let last = slot.1.take();
                    *slot = (last, Some(MetricsSample { at: now, metrics }));
                }
                None => *slot = (None, None),
            }
        }
        println!("{}", observed.live_line(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_recorded_by_kind() {
        let mut o = lock(&shared(2)).clone_empty();
        let t = Instant::now();
        o.record(0, t, &json!({"type": "block", "height": 5, "hash": "aa", "proposer": "p", "time_ms": 1, "txs": 3}));
        o.record(1, t, &json!({"type": "finality", "height": 5, "hash": "aa", "round": 0, "signers": 3, "latency_ms": 40, "evidence": 0}));
        o.record(1, t, &json!({"type": "ban", "target": "address 198.18.100.101/32", "addresses": ["198.18.100.101/32"], "reason": "connection_flood", "until_ms": 9, "offence": 1, "detail": ""}));
        o.record(0, t, &json!({"type": "lagged", "missed": 4}));
        o.record(0, t, &json!({"type": "drop", "source": "1.2.3.4", "reason": "blocklisted", "port": 1, "protocol": 17}));
        assert_eq!(o.tips, [5, 0]);
        assert_eq!(o.blocks[0].txs, 3);
        assert_eq!(o.finality[0].latency_ms, 40);
        assert_eq!(o.bans[0].addresses, ["198.18.100.101/32"]);
        assert_eq!(o.missed, 4);
        let later = t + Duration::from_secs(1);
        assert_eq!(o.committed(t, later), (1, 3));
        assert_eq!(o.latencies(t, later), [40]);
        assert_eq!(o.node_latencies(1, t, later), [40]);
        assert!(o.node_latencies(0, t, later).is_empty());
        assert_eq!(o.latencies(later, later), Vec::<u64>::new());
    }

    #[test]
    fn windows_are_half_open_and_follow_arrival_order() {
        let mut o = lock(&shared(2)).clone_empty();
        let t = Instant::now();
        let s = Duration::from_secs;
        for (k, node) in [0, 1, 0, 0].into_iter().enumerate() {
            let at = t + s(k as u64);
            let block = json!({"type": "block", "height": k, "txs": 10 + k});
            o.record(node, at, &block);
            o.record(node, at, &json!({"type": "finality", "latency_ms": k}));
        }
        assert_eq!(o.committed(t, t + s(4)), (3, 10 + 12 + 13));
        assert_eq!(o.committed(t + s(1), t + s(3)), (1, 12));
        assert_eq!(o.committed(t + s(3), t + s(1)), (0, 0));
        assert_eq!(o.latencies(t + s(1), t + s(3)), [1, 2]);
        assert_eq!(o.node_latencies(0, t, t + s(9)), [0, 2, 3]);
        assert!(o.latencies(t + s(4), t + s(9)).is_empty());
    }

    #[test]
    fn the_live_line_shows_rates_drops_and_bans() {
        let mut o = lock(&shared(2)).clone_empty();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let read = |text: &str, at| {
            Some(MetricsSample {
                at,
                metrics: Metrics::parse(text).unwrap(),
            })
        };
        o.metrics[0] = (
            read(
                "firewall_packets_total{verdict=\"drop\",reason=\"rate_limited\"} 100\n",
                t0,
            ),
            read(
                "firewall_packets_total{verdict=\"drop\",reason=\"rate_limited\"} 2100\np2p_bans_active{reason=\"manual\"} 1\n",
                t1,
            ),
        );
        o.tips = vec![10, 12];
        o.phase = Some(("udp-rate".into(), t0));
        let line = o.live_line(t1);
        assert!(line.starts_with("[udp-rate   1s] height 10..12"), "{line}");
        assert!(line.contains("drops/s rate_limited=2000"), "{line}");
        assert!(line.contains("bans manual=1"), "{line}");
    }

    impl Observed {
        fn clone_empty(&self) -> Observed {
            Observed {
                metrics: vec![(None, None); self.tips.len()],
                tips: self.tips.clone(),
                up: self.up.clone(),
                ..Observed::default()
            }
        }
    }
}

//! The simulated network: a fixed delay per directed link plus seeded jitter, seeded loss,
//! partitions; and the event queue that orders everything by (time, sequence number).

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::StdRng;

use crate::scenario::LinkProfile;

/// Events ordered by time, then by the order they were scheduled in: two runs that schedule
/// the same events in the same order pop them in the same order.
#[derive(Debug)]
pub struct EventQueue<E> {
    events: BTreeMap<(u64, u64), E>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            events: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time_ms`.
    pub fn push(&mut self, time_ms: u64, event: E) {
        self.events.insert((time_ms, self.next_seq), event);
        self.next_seq += 1;
    }

    /// Time of the earliest event.
    pub fn next_time(&self) -> Option<u64> {
        self.events.first_key_value().map(|((time, _), _)| *time)
    }

    /// Removes the earliest event.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.events.pop_first().map(|((time, _), e)| (time, e))
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What happened to the messages sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages dropped by random loss.
    pub lost: u64,
    /// Messages dropped because a partition separated the two ends.
    pub partitioned: u64,
    /// Messages scheduled for delivery.
    pub scheduled: u64,
    /// Sum of the delays of scheduled messages, milliseconds.
    pub delay_sum_ms: u64,
}

impl NetworkStats {
    /// Mean delay of a delivered message, milliseconds.
    pub fn mean_delay_ms(&self) -> f64 {
        if self.scheduled == 0 {
            return 0.0;
        }
        self.delay_sum_ms as f64 / self.scheduled as f64
    }
}

/// Links between `n` validators, and the client that submits transactions.
#[derive(Debug)]
pub struct Network {
    /// Fixed delay of each directed link, milliseconds.
    base_ms: Vec<Vec<u64>>,
    profile: LinkProfile,
    loss_percent: u8,
    groups: Vec<u8>,
    stats: NetworkStats,
}

impl Network {
    /// `n` validators, all in one group, with link delays drawn from `profile`.
    pub fn new(n: usize, profile: LinkProfile, loss_percent: u8, rng: &mut StdRng) -> Network {
        let base_ms = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| rng.random_range(profile.min_latency_ms..=profile.max_latency_ms))
                    .collect()
            })
            .collect();
        Network {
            base_ms,
            profile,
            loss_percent,
            groups: vec![0; n],
            stats: NetworkStats::default(),
        }
    }

    /// Splits the validators into `groups` (one entry per validator).
    pub fn partition(&mut self, groups: &[u8]) {
        self.groups = groups.to_vec();
    }

    /// Ends any partition.
    pub fn heal(&mut self) {
        self.groups.iter_mut().for_each(|g| *g = 0);
    }

    /// Sets the loss rate, percent.
    pub fn set_loss(&mut self, percent: u8) {
        self.loss_percent = percent;
    }

    /// Whether a partition lets `a` and `b` talk.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.groups[a] == self.groups[b]
    }

    /// The delay of one message from `from` to `to`, or `None` if it is lost or partitioned.
    pub fn route(&mut self, from: usize, to: usize, rng: &mut StdRng) -> Option<u64> {
        self.stats.sent += 1;
        if !self.connected(from, to) {
            self.stats.partitioned += 1;
            return None;
        }
        if self.loss_percent > 0 && rng.random_range(0..100) < self.loss_percent {
            self.stats.lost += 1;
            return None;
        }
        let delay = self.base_ms[from][to] + self.jitter(rng);
        self.stats.scheduled += 1;
        self.stats.delay_sum_ms += delay;
        Some(delay)
    }

    /// The delay of a reliable exchange (block sync over a stream) from `from` to `to`: no
    /// loss, not counted in the message statistics. The caller checks partitions.
    pub fn stream_delay(&self, from: usize, to: usize, rng: &mut StdRng) -> u64 {
        self.base_ms[from][to] + self.jitter(rng)
    }

    /// The delay of a transaction from the client (outside the validators' network) to a
    /// validator, or `None` if it is lost.
    pub fn client_delay(&self, rng: &mut StdRng) -> Option<u64> {
        if self.loss_percent > 0 && rng.random_range(0..100) < self.loss_percent {
            return None;
        }
        Some(rng.random_range(self.profile.min_latency_ms..=self.profile.max_latency_ms))
    }

    /// Statistics so far.
    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    fn jitter(&self, rng: &mut StdRng) -> u64 {
        if self.profile.jitter_ms == 0 {
            0
        } else {
            rng.random_range(0..=self.profile.jitter_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn profile() -> LinkProfile {
        LinkProfile {
            min_latency_ms: 10,
            max_latency_ms: 50,
            jitter_ms: 5,
        }
    }

    #[test]
    fn events_pop_by_time_then_by_schedule_order() {
        let mut q = EventQueue::default();
        q.push(20, "c");
        q.push(10, "a");
        q.push(20, "d");
        q.push(10, "b");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_partition_drops_messages_between_groups_until_healed() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut net = Network::new(4, profile(), 0, &mut rng);
        net.partition(&[0, 0, 1, 1]);
        assert!(net.route(0, 1, &mut rng).is_some());
        assert_eq!(net.route(0, 2, &mut rng), None);
        net.heal();
        let delay = net.route(0, 2, &mut rng).expect("healed");
        assert!((10..=55).contains(&delay));
        assert_eq!(net.stats().partitioned, 1);
    }

    #[test]
    fn loss_drops_about_the_configured_share() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut net = Network::new(2, profile(), 10, &mut rng);
        for _ in 0..10_000 {
            net.route(0, 1, &mut rng);
        }
        assert!((800..1200).contains(&net.stats().lost), "{:?}", net.stats());
    }
}

//! Draw a scenario from a seed: validators and stakes, who is Byzantine and how, link
//! latencies, loss, partitions and crashes, all healed by a fixed time.
//!
//! # Invariants
//! A scenario that passes [`Scenario::check`] has 4 to 7 validators with positive stakes,
//! Byzantine validators holding less than a third of the stake, partitions that do not overlap,
//! at most one crash per validator, and every fault over by `heal_ms`.

use std::fmt;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Fewest validators in a drawn scenario.
pub const MIN_VALIDATORS: usize = 4;
/// Most validators in a drawn scenario.
pub const MAX_VALIDATORS: usize = 7;
/// Stakes are multiples of this.
const STAKE_UNIT: u64 = 100;
/// Largest stake drawn, in [`STAKE_UNIT`]s.
const MAX_STAKE_UNITS: u64 = 10;
/// Shortest and longest fault window, milliseconds of simulated time.
const FAULT_WINDOW_MS: (u64, u64) = (1_500, 5_000);
/// Shortest partition, milliseconds.
const MIN_PARTITION_MS: u64 = 200;
/// Shortest downtime of a crashed validator, milliseconds.
const MIN_DOWNTIME_MS: u64 = 100;
/// Longest downtime of a crashed validator, milliseconds.
const MAX_DOWNTIME_MS: u64 = 3_000;
/// Highest message loss drawn during the fault window, percent.
const MAX_LOSS_PERCENT: u8 = 10;
/// Heights every honest validator must gain after the faults heal.
pub const LIVENESS_HEIGHTS: u64 = 3;

/// What a validator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Runs the engine and sends what it says.
    Honest,
    /// Runs the engine, and signs a conflicting twin of every vote and proposal it sends;
    /// the two versions go to different halves of the network.
    Equivocator,
    /// Runs the engine and sends nothing at all.
    Silent,
    /// Runs the engine, but replaces each block it proposes with a corrupted one.
    InvalidProposer,
}

impl Role {
    /// Whether the role follows the protocol.
    pub fn is_honest(self) -> bool {
        self == Role::Honest
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Honest => "honest",
            Role::Equivocator => "equivocator",
            Role::Silent => "silent",
            Role::InvalidProposer => "invalid proposer",
        })
    }
}

/// Message delays between validators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    /// Fastest link's fixed delay, milliseconds.
    pub min_latency_ms: u64,
    /// Slowest link's fixed delay, milliseconds.
    pub max_latency_ms: u64,
    /// Extra delay drawn per message, 0 to this, milliseconds (reorders messages).
    pub jitter_ms: u64,
}

/// A network split: messages between groups are dropped from `start_ms` to `end_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Start, milliseconds after the simulation starts.
    pub start_ms: u64,
    /// Heal, milliseconds after the simulation starts.
    pub end_ms: u64,
    /// Group of each validator; validators talk only within their group.
    pub groups: Vec<u8>,
}

/// A validator's process dies and later restarts on the same store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    /// The validator.
    pub node: usize,
    /// When it dies, milliseconds after the simulation starts.
    pub at_ms: u64,
    /// When it restarts, milliseconds after the simulation starts.
    pub restart_ms: u64,
    /// The process dies inside its next engine call: what that call wrote to the store
    /// stays, the messages it produced are never sent.
    pub mid_call: bool,
}

/// Who receives which version of an equivocator's messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Validators in the half that receives the conflicting twins (the rest get the originals).
    pub twins_to: Vec<usize>,
    /// A validator that receives both versions, if any.
    pub witness: Option<usize>,
}

/// One simulated run, fully determined by its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Seed of every random draw of the run (network delays, loss, transactions).
    pub seed: u64,
    /// Stake of each validator.
    pub stakes: Vec<u64>,
    /// Role of each validator.
    pub roles: Vec<Role>,
    /// Link delays.
    pub links: LinkProfile,
    /// Messages lost until `heal_ms`, percent.
    pub loss_percent: u8,
    /// Partitions, in time order, not overlapping.
    pub partitions: Vec<Partition>,
    /// Crashes, at most one per validator.
    pub crashes: Vec<Crash>,
    /// How equivocators split the network.
    pub split: Split,
    /// Every partition, crash and loss is over by then, milliseconds after the start.
    pub heal_ms: u64,
    /// Heights every honest validator must gain after `heal_ms`.
    pub liveness_heights: u64,
}

/// Why a scenario cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// Validator count outside the supported range, or lists of different lengths.
    #[error(
        "{validators} validators with {roles} roles: need {MIN_VALIDATORS} to {MAX_VALIDATORS}, one role each"
    )]
    Validators {
        /// Stakes given.
        validators: usize,
        /// Roles given.
        roles: usize,
    },
    /// A validator without stake.
    #[error("validator v{node} has no stake")]
    ZeroStake {
        /// The validator.
        node: usize,
    },
    /// Byzantine validators hold a third of the stake or more.
    #[error("Byzantine stake {byzantine} of {total} is not below a third")]
    TooByzantine {
        /// Byzantine stake.
        byzantine: u64,
        /// Total stake.
        total: u64,
    },
    /// A fault names a validator that does not exist, lasts past `heal_ms`, or overlaps another.
    #[error("fault does not fit the scenario: {0}")]
    Fault(String),
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(MIN_VALIDATORS..=MAX_VALIDATORS);
        let mut stakes: Vec<u64> = (0..n)
            .map(|_| rng.random_range(1..=MAX_STAKE_UNITS) * STAKE_UNIT)
            .collect();
        if stakes.iter().all(|s| *s == stakes[0]) {
            stakes[0] += STAKE_UNIT;
        }
        let total: u64 = stakes.iter().sum();

        let mut roles = vec![Role::Honest; n];
        let wanted = match rng.random_range(0..10) {
            0 => 0,
            1..=6 => 1,
            _ => 2,
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut byzantine = 0;
        for &node in order.iter() {
            if roles.iter().filter(|r| !r.is_honest()).count() == wanted {
                break;
            }
            if (byzantine + stakes[node]) * 3 < total {
                byzantine += stakes[node];
                roles[node] = [Role::Equivocator, Role::Silent, Role::InvalidProposer]
                    [rng.random_range(0..3)];
            }
        }

        let min_latency_ms = rng.random_range(10..=40);
        let links = LinkProfile {
            min_latency_ms,
            max_latency_ms: min_latency_ms + rng.random_range(0..=60),
            jitter_ms: rng.random_range(0..=30),
        };
        let heal_ms = rng.random_range(FAULT_WINDOW_MS.0..=FAULT_WINDOW_MS.1);
        let loss_percent = if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(1..=MAX_LOSS_PERCENT)
        };

        let mut partitions = Vec::new();
        let mut cursor = 0;
        for _ in 0..rng.random_range(0..=2) {
            let start_ms = cursor + rng.random_range(0..=heal_ms / 4);
            let end_ms = start_ms + rng.random_range(MIN_PARTITION_MS..=heal_ms / 2);
            if end_ms > heal_ms {
                break;
            }
            partitions.push(Partition {
                start_ms,
                end_ms,
                groups: draw_groups(&mut rng, n),
            });
            cursor = end_ms;
        }

        let mut crashes = Vec::new();
        let mut nodes: Vec<usize> = (0..n).collect();
        nodes.shuffle(&mut rng);
        for &node in nodes.iter().take(rng.random_range(0..=2)) {
            let at_ms = rng.random_range(0..heal_ms - MIN_DOWNTIME_MS);
            let longest = (heal_ms - at_ms).min(MAX_DOWNTIME_MS);
            crashes.push(Crash {
                node,
                at_ms,
                restart_ms: at_ms + rng.random_range(MIN_DOWNTIME_MS..=longest),
                mid_call: rng.random_bool(0.5),
            });
        }

        let split = Split {
            twins_to: (0..n).filter(|_| rng.random_bool(0.5)).collect(),
            witness: rng.random_bool(0.5).then(|| rng.random_range(0..n)),
        };

        Scenario {
            seed,
            stakes,
            roles,
            links,
            loss_percent,
            partitions,
            crashes,
            split,
            heal_ms,
            liveness_heights: LIVENESS_HEIGHTS,
        }
    }

    /// Honest validators with `stakes` on steady links, and no fault: the base for scenarios
    /// that add exactly the faults a test is about.
    pub fn calm(seed: u64, stakes: &[u64]) -> Scenario {
        Scenario {
            seed,
            stakes: stakes.to_vec(),
            roles: vec![Role::Honest; stakes.len()],
            links: LinkProfile {
                min_latency_ms: 20,
                max_latency_ms: 60,
                jitter_ms: 10,
            },
            loss_percent: 0,
            partitions: Vec::new(),
            crashes: Vec::new(),
            split: Split::default(),
            heal_ms: 2_000,
            liveness_heights: LIVENESS_HEIGHTS,
        }
    }

    /// Number of validators.
    pub fn validators(&self) -> usize {
        self.stakes.len()
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check(&self) -> Result<(), ScenarioError> {
        let n = self.stakes.len();
        if !(MIN_VALIDATORS..=MAX_VALIDATORS).contains(&n) || self.roles.len() != n {
            return Err(ScenarioError::Validators {
                validators: n,
                roles: self.roles.len(),
            });
        }
        if let Some(node) = self.stakes.iter().position(|s| *s == 0) {
            return Err(ScenarioError::ZeroStake { node });
        }
        let total: u64 = self.stakes.iter().sum();
        let byzantine: u64 = self
            .stakes
            .iter()
            .zip(&self.roles)
            .filter(|(_, r)| !r.is_honest())
            .map(|(s, _)| s)
            .sum();
        if byzantine * 3 >= total {
            return Err(ScenarioError::TooByzantine { byzantine, total });
        }
        let fault = |what: String| Err(ScenarioError::Fault(what));
        if self.links.min_latency_ms == 0 || self.links.min_latency_ms > self.links.max_latency_ms {
            return fault("link latencies must satisfy 0 < min <= max".into());
        }
        let mut previous_end = 0;
        for p in &self.partitions {
            if p.groups.len() != n || p.start_ms < previous_end || p.start_ms >= p.end_ms {
                return fault(format!("partition {p:?}"));
            }
            if p.end_ms > self.heal_ms {
                return fault(format!("partition {p:?} ends after heal_ms"));
            }
            previous_end = p.end_ms;
        }
        for (i, c) in self.crashes.iter().enumerate() {
            if c.node >= n || c.at_ms >= c.restart_ms || c.restart_ms > self.heal_ms {
                return fault(format!("crash {c:?}"));
            }
            if self.crashes[..i].iter().any(|d| d.node == c.node) {
                return fault(format!("second crash of v{}", c.node));
            }
        }
        if self
            .split
            .twins_to
            .iter()
            .chain(&self.split.witness)
            .any(|&v| v >= n)
        {
            return fault(format!("split {:?}", self.split));
        }
        Ok(())
    }
}

/// Two groups: one validator cut off, or a random split; both groups non-empty.
fn draw_groups(rng: &mut StdRng, n: usize) -> Vec<u8> {
    if rng.random_bool(0.5) {
        let lonely = rng.random_range(0..n);
        return (0..n).map(|i| u8::from(i == lonely)).collect();
    }
    loop {
        let groups: Vec<u8> = (0..n).map(|_| u8::from(rng.random_bool(0.5))).collect();
        if groups.contains(&0) && groups.contains(&1) {
            return groups;
        }
    }
}

/// `{v0, v2}` for validators 0 and 2.
fn nodes(list: impl IntoIterator<Item = usize>) -> String {
    let names: Vec<String> = list.into_iter().map(|i| format!("v{i}")).collect();
    format!("{{{}}}", names.join(", "))
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.stakes.iter().sum();
        writeln!(
            f,
            "seed {}: {} validators, total stake {total}",
            self.seed,
            self.validators()
        )?;
        for (i, (stake, role)) in self.stakes.iter().zip(&self.roles).enumerate() {
            writeln!(f, "  v{i}: stake {stake}, {role}")?;
        }
        let l = &self.links;
        writeln!(
            f,
            "  links {}..{} ms + jitter 0..{} ms; loss {}% until faults heal",
            l.min_latency_ms, l.max_latency_ms, l.jitter_ms, self.loss_percent
        )?;
        for p in &self.partitions {
            let group = |g: u8| nodes((0..p.groups.len()).filter(|&i| p.groups[i] == g));
            writeln!(
                f,
                "  partition {}..{} ms: {} | {}",
                p.start_ms,
                p.end_ms,
                group(0),
                group(1)
            )?;
        }
        for c in &self.crashes {
            writeln!(
                f,
                "  crash v{} at {} ms{}, restart at {} ms",
                c.node,
                c.at_ms,
                if c.mid_call {
                    " (inside an engine call)"
                } else {
                    ""
                },
                c.restart_ms
            )?;
        }
        if self.roles.contains(&Role::Equivocator) {
            writeln!(
                f,
                "  equivocation: twins to {}, witness {}",
                nodes(self.split.twins_to.iter().copied()),
                self.split
                    .witness
                    .map_or_else(|| "none".to_owned(), |w| format!("v{w}"))
            )?;
        }
        write!(
            f,
            "  faults heal at {} ms; then every honest validator gains {} heights",
            self.heal_ms, self.liveness_heights
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_scenarios_are_valid_and_cover_every_role_and_fault() {
        let mut roles = std::collections::BTreeSet::new();
        let (mut partitions, mut crashes, mut lossy) = (0, 0, 0);
        for seed in 0..500 {
            let s = Scenario::from_seed(seed);
            assert_eq!(s.check(), Ok(()), "{s}");
            roles.extend(s.roles.iter().copied());
            partitions += s.partitions.len();
            crashes += s.crashes.len();
            lossy += usize::from(s.loss_percent > 0);
        }
        assert_eq!(roles.len(), 4, "{roles:?}");
        assert!(partitions > 100 && crashes > 100 && lossy > 100);
    }

    #[test]
    fn a_third_of_the_stake_byzantine_is_refused() {
        // 150 of 450 is exactly a third.
        let mut s = Scenario::calm(1, &[100, 100, 100, 150]);
        s.roles[3] = Role::Silent;
        assert!(matches!(s.check(), Err(ScenarioError::TooByzantine { .. })));
        s.stakes[3] = 149;
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn the_same_seed_draws_the_same_scenario() {
        assert_eq!(Scenario::from_seed(7), Scenario::from_seed(7));
        assert_ne!(Scenario::from_seed(7), Scenario::from_seed(8));
    }
}

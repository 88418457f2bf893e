//! Control the XDP filter from user space: load and attach it, pin it, edit its rules, read its
//! counters and drop events, and decide the same way in user space (the reference model); attach
//! and read the kernel telemetry tracepoints.
//!
//! # Design
//! Everything an operator does goes through the maps pinned under `/sys/fs/bpf/<instance>/`, so
//! any process (the node, a second CLI) administers a running filter, and rules outlive the
//! process that wrote them. See `docs/firewall.md` for the pipeline and the map layout.

pub mod clock;
pub mod error;
pub mod frames;
pub mod maps;
pub mod model;
pub mod netns;
pub mod program;
pub mod rules;
pub mod telemetry;

pub use error::FirewallError;
pub use firewall_common::{BanReason, Mode, Reason, Verdict};
pub use maps::{Maps, Stats};
pub use program::{AttachMode, Attached, Instance};
pub use rules::{Policy, Rule, RuleKind, RuleSet, Why};

//! The lab's verdicts, as pure functions of what it measured: heights, latency, kernel drops,
//! bans, and the attackers' own summaries.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::client::Why;
use crate::phase::Phase;
use crate::prom::Metrics;
use crate::report::Check;

/// Heights every running honest node must advance during a phase.
pub const MIN_ADVANCE: u64 = 2;
/// An attack phase's finality median may be at most this many times the quiet phase's.
pub const LATENCY_FACTOR: f64 = 1.5;

/// Check names, stable for the report's readers.
pub mod names {
    /// Every running honest node advanced.
    pub const HEIGHTS: &str = "heights advanced";
    /// Finality median against the quiet phase's.
    pub const LATENCY: &str = "finality latency";
    /// The attacker ran and exited by itself.
    pub const ATTACKER: &str = "attacker ran";
    /// The kernel dropped the flood with the expected reason.
    pub const KERNEL_DROPS: &str = "kernel drops";
    /// The kernel telemetry saw the SYNs that got past XDP as handshakes that never completed.
    pub const STACK_HANDSHAKES: &str = "stack handshakes";
    /// The target banned the attacker with the expected reason.
    pub const BAN: &str = "ban";
    /// The operator's block was accepted by every node.
    pub const OPERATOR_BLOCK: &str = "operator block";
    /// Replays were refused by the mempool.
    pub const REPLAYS_REFUSED: &str = "replays refused";
    /// No transaction was committed twice.
    pub const NO_DOUBLE_COMMIT: &str = "no double commit";
    /// The equivocator's stake was cut.
    pub const SLASHED: &str = "equivocator slashed";
    /// The equivocator signed both double votes and double proposals.
    pub const DOUBLE_SIGNED: &str = "double signed";
    /// The honest nodes turned the equivocation into evidence.
    pub const EVIDENCE: &str = "evidence";
    /// No honest validator lost stake.
    pub const HONEST_STAKES: &str = "honest stakes unchanged";
    /// The restarted validator caught up.
    pub const CAUGHT_UP: &str = "caught up";
    /// The restarted validator signed a commit again.
    pub const SIGNED_AGAIN: &str = "signed again";
    /// Every honest node has the same block at every height.
    pub const AGREEMENT: &str = "agreement";
    /// No honest validator is blocked anywhere.
    pub const HONEST_NOT_BLOCKED: &str = "honest validators not blocked";
    /// No ban event named an honest validator.
    pub const NO_HONEST_BAN: &str = "no ban of an honest validator";
    /// Every honest node kept running.
    pub const NODES_RAN: &str = "nodes kept running";
    /// Prometheus scraped every node, loaded every rule and had data for every dashboard panel.
    pub const MONITORING: &str = "monitoring";
}

/// Each running node's advance from `start` to `end`; the check and the least advance.
pub fn heights(start: &[Option<u64>], end: &[Option<u64>]) -> (Check, u64) {
    let mut least: Option<u64> = None;
    let mut parts = Vec::new();
    let mut ok = true;
    for (i, (s, e)) in start.iter().zip(end).enumerate() {
        match (s, e) {
            (Some(s), Some(e)) => {
                let advanced = e.saturating_sub(*s);
                least = Some(least.map_or(advanced, |l| l.min(advanced)));
                ok &= advanced >= MIN_ADVANCE;
                parts.push(format!("v{i} {s}->{e}"));
            }
            (_, None) => {
                ok = false;
                parts.push(format!("v{i} not answering at the end"));
            }
            (None, Some(e)) => {
                parts.push(format!("v{i} ?->{e}"));
            }
        }
    }
    let least = least.unwrap_or(0);
    ok &= least >= MIN_ADVANCE;
    let evidence = format!(
        "least advance +{least} (need +{MIN_ADVANCE}): {}",
        parts.join(", ")
    );
    (Check::new(names::HEIGHTS, ok, evidence), least)
}

/// The finality median against the quiet phase's: enforced with XDP on attack phases,
/// reported otherwise. Returns the check and the ratio.
pub fn latency(
    phase: Phase,
    p50: u64,
    samples: usize,
    quiet_p50: Option<u64>,
    xdp: bool,
) -> (Option<Check>, Option<f64>) {
    if phase == Phase::Quiet {
        return (None, None);
    }
    let Some(quiet) = quiet_p50.filter(|q| *q > 0) else {
        return (
            Some(Check::info(
                names::LATENCY,
                format!("p50 {p50} ms; no quiet baseline"),
            )),
            None,
        );
    };
    if samples == 0 {
        let check = Check::new(
            names::LATENCY,
            !xdp || !phase.latency_checked(),
            "no block was finalized",
        );
        return (Some(check), None);
    }
    let ratio = p50 as f64 / quiet as f64;
    let evidence = format!(
        "p50 {p50} ms = {ratio:.2}x the quiet phase's {quiet} ms (limit {LATENCY_FACTOR}x)"
    );
    let check = if xdp && phase.latency_checked() {
        Check::new(names::LATENCY, ratio <= LATENCY_FACTOR, evidence)
    } else {
        let why = if xdp {
            "reported only"
        } else {
            "reported only without XDP"
        };
        Check::info(names::LATENCY, format!("{evidence}; {why}"))
    };
    (Some(check), Some(ratio))
}

/// The increase of counter `name` (matching `filter`) from `start` to `end`, by `label`.
pub fn delta_by(
    start: Option<&Metrics>,
    end: Option<&Metrics>,
    name: &str,
    label: &str,
    filter: &[(&str, &str)],
) -> BTreeMap<String, u64> {
    let Some(end) = end else {
        return BTreeMap::new();
    };
    let before = start
        .map(|s| s.by_label(name, label, filter))
        .unwrap_or_default();
    end.by_label(name, label, filter)
        .into_iter()
        .map(|(k, v)| {
            let b = before.get(&k).copied().unwrap_or(0.0);
            // A restarted node's counters start again from 0: count from there.
            let d = if v >= b { v - b } else { v };
            (k, d.max(0.0) as u64)
        })
        .collect()
}

/// Adds `from` into `into`.
pub fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k).or_insert(0) += v;
    }
}

/// The last line of `output` that is a JSON object.
pub fn last_json(output: &str) -> Option<Value> {
    output
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
}

/// A flood's kernel check on the target: with XDP, drops with `reason` rose by more than
/// nothing (and, for the blocked range, by at least half the packets sent).
pub fn flood_drops(
    phase: Phase,
    reason: &str,
    sent: Option<u64>,
    dropped: u64,
    xdp: bool,
) -> Check {
    if !xdp {
        return Check::na(
            names::KERNEL_DROPS,
            format!("n/a (no XDP): {reason} drops are a kernel filter's"),
        );
    }
    let sent_text = sent.map_or("unknown".to_string(), |s| s.to_string());
    let (ok, need) = match (phase, sent) {
        (Phase::UdpBlocked, Some(s)) => (
            dropped >= s.div_ceil(2) && dropped > 0,
            format!("at least {}", s.div_ceil(2)),
        ),
        (Phase::UdpBlocked, None) => (false, "the packets sent".to_string()),
        _ => (dropped > 0, "more than 0".to_string()),
    };
    Check::new(
        names::KERNEL_DROPS,
        ok,
        format!(
            "v0 dropped {dropped} packets as {reason} (need {need}); the attacker sent {sent_text}"
        ),
    )
}

/// The SYN flood's trace in the kernel stack (telemetry on the target): the spoofed SYNs that
/// XDP let through (all of them without XDP) started handshakes that never complete, so more
/// started than completed. `deltas` are the phase's increases of `kernel_tcp_handshakes_total`
/// by result.
pub fn stack_handshakes(deltas: &BTreeMap<String, u64>) -> Check {
    if deltas.is_empty() {
        return Check::new(
            names::STACK_HANDSHAKES,
            false,
            "v0 exports no kernel_tcp_handshakes_total: its kernel telemetry is not attached"
                .to_string(),
        );
    }
    let get = |result: &str| deltas.get(result).copied().unwrap_or(0);
    let (started, completed) = (get("started"), get("completed"));
    Check::new(
        names::STACK_HANDSHAKES,
        started > completed,
        format!(
            "v0's stack saw {started} handshakes start and {completed} complete (need more started than completed), {} abandoned, {} untracked",
            get("abandoned"),
            get("untracked")
        ),
    )
}

/// Whether node `target` banned the attacker at `ip` with one of `reasons`: in the kernel with
/// XDP, by the peer manager (its bans or ban events) without.
pub fn ban(
    target: usize,
    ip: Ipv4Addr,
    reasons: &[&str],
    why: Option<&Why>,
    events: &[(String, Vec<String>)],
    xdp: bool,
) -> Check {
    let host = format!("{ip}/32");
    let evented: Vec<&str> = events
        .iter()
        .filter(|(_, addrs)| addrs.iter().any(|a| *a == host || a == &ip.to_string()))
        .map(|(r, _)| r.as_str())
        .collect();
    let expected = reasons.join(" or ");
    let Some(why) = why else {
        return Check::new(
            names::BAN,
            false,
            format!("v{target}'s admin API did not answer why {ip}"),
        );
    };
    if xdp {
        let ok = why
            .kernel_block
            .as_deref()
            .is_some_and(|r| reasons.contains(&r));
        let seen = why.kernel_block.as_deref().unwrap_or("no kernel block");
        Check::new(
            names::BAN,
            ok,
            format!(
                "v{target} kernel block of {ip}: {seen} (expected {expected}); ban events {evented:?}"
            ),
        )
    } else {
        let ok = why.peer_bans.iter().any(|r| reasons.contains(&r.as_str()))
            || evented.iter().any(|r| reasons.contains(r));
        Check::new(
            names::BAN,
            ok,
            format!(
                "v{target} peer-manager bans of {ip}: {:?}, ban events {evented:?} (expected {expected}; no XDP)",
                why.peer_bans
            ),
        )
    }
}

/// Whether a ban event (target, addresses) names an honest validator (by address or peer id).
pub fn names_honest(
    target: &str,
    addresses: &[String],
    honest_ips: &[Ipv4Addr],
    honest_peers: &[String],
) -> bool {
    let by_address = addresses.iter().any(|a| {
        let host = a.split('/').next().unwrap_or(a);
        honest_ips.iter().any(|ip| ip.to_string() == host)
    });
    let by_peer = honest_peers.iter().any(|p| target.ends_with(p.as_str()));
    by_address || by_peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_need_every_answering_node_to_advance() {
        let (c, least) = heights(&[Some(10), Some(9)], &[Some(15), Some(12)]);
        assert!(!c.failed(), "{c:?}");
        assert_eq!(least, 3);
        let (c, least) = heights(&[Some(10), Some(9)], &[Some(11), Some(12)]);
        assert!(c.failed());
        assert_eq!(least, 1);
        let (c, _) = heights(&[Some(10)], &[None]);
        assert!(c.failed(), "a node not answering at the end fails");
        let (c, _) = heights(&[None, Some(1)], &[Some(30), Some(5)]);
        assert!(
            !c.failed(),
            "a node down at the start counts from its end only: {c:?}"
        );
    }

    #[test]
    fn latency_is_enforced_on_attacks_with_xdp_only() {
        let (c, r) = latency(Phase::Syn, 45, 10, Some(30), true);
        assert_eq!(r, Some(1.5));
        assert!(!c.unwrap().failed());
        let (c, _) = latency(Phase::Syn, 46, 10, Some(30), true);
        assert!(c.unwrap().failed());
        let (c, _) = latency(Phase::Syn, 300, 10, Some(30), false);
        assert_eq!(c.unwrap().status, crate::report::Status::Info);
        let (c, _) = latency(Phase::Restart, 300, 10, Some(30), true);
        assert_eq!(c.unwrap().status, crate::report::Status::Info);
        assert_eq!(latency(Phase::Quiet, 30, 10, None, true), (None, None));
        let (c, _) = latency(Phase::Syn, 0, 0, Some(30), true);
        assert!(c.unwrap().failed(), "no finality at all under attack fails");
    }

    #[test]
    fn deltas_count_from_zero_after_a_restart() {
        let m = |t: &str| Metrics::parse(t).unwrap();
        let a = m("x_total{reason=\"a\"} 10\nx_total{reason=\"b\"} 100\n");
        let b = m("x_total{reason=\"a\"} 15\nx_total{reason=\"b\"} 4\nx_total{reason=\"c\"} 2\n");
        let d = delta_by(Some(&a), Some(&b), "x_total", "reason", &[]);
        assert_eq!(
            d,
            BTreeMap::from([("a".into(), 5), ("b".into(), 4), ("c".into(), 2)])
        );
        assert!(delta_by(Some(&a), None, "x_total", "reason", &[]).is_empty());
        let mut sum = d.clone();
        add_counts(&mut sum, d);
        assert_eq!(sum["a"], 10);
    }

    #[test]
    fn attacker_outputs_are_read() {
        let flood = "starting\nsent 12345 packets in 8.00s (1543 pps)\n\
                     {\"attack\":\"flood\",\"sent\":12345,\"secs\":8.0,\"pps\":1543}\n";
        assert_eq!(last_json(flood).unwrap()["sent"], 12345);
        assert_eq!(last_json("nothing"), None);
        let out = "progress {not json\n{\"attack\":\"gossip\",\"published\":3}\n";
        assert_eq!(last_json(out).unwrap()["published"], 3);
        assert_eq!(last_json("[1,2]\n"), None);
    }

    #[test]
    fn flood_drops_need_half_the_blocked_packets() {
        assert!(!flood_drops(Phase::UdpBlocked, "blocklisted", Some(100), 50, true).failed());
        assert!(flood_drops(Phase::UdpBlocked, "blocklisted", Some(100), 49, true).failed());
        assert!(flood_drops(Phase::UdpBlocked, "blocklisted", None, 49, true).failed());
        let deltas = |started: u64, completed: u64| {
            BTreeMap::from([
                ("started".to_string(), started),
                ("completed".to_string(), completed),
            ])
        };
        assert!(!stack_handshakes(&deltas(40, 1)).failed());
        assert!(stack_handshakes(&deltas(3, 3)).failed());
        assert!(stack_handshakes(&BTreeMap::new()).failed());
        assert!(!flood_drops(Phase::Syn, "rate_limited", Some(100), 1, true).failed());
        assert!(flood_drops(Phase::Syn, "rate_limited", Some(100), 0, true).failed());
        assert_eq!(
            flood_drops(Phase::Syn, "rate_limited", None, 0, false).status,
            crate::report::Status::Na
        );
    }

    #[test]
    fn bans_are_judged_in_the_kernel_with_xdp_and_in_the_peer_manager_without() {
        let ip = Ipv4Addr::new(198, 18, 100, 101);
        let kernel = Why {
            kernel_block: Some("connection_flood".into()),
            peer_bans: vec![],
            decision: "blocked".into(),
        };
        let reasons = ["connection_flood", "handshake_failures"];
        assert!(!ban(1, ip, &reasons, Some(&kernel), &[], true).failed());
        assert!(ban(1, ip, &["invalid_signature"], Some(&kernel), &[], true).failed());
        assert!(ban(1, ip, &reasons, None, &[], true).failed());
        let none = Why::default();
        assert!(ban(1, ip, &reasons, Some(&none), &[], false).failed());
        let events = [(
            "connection_flood".to_string(),
            vec!["198.18.100.101/32".to_string()],
        )];
        assert!(!ban(1, ip, &reasons, Some(&none), &events, false).failed());
        let peers = Why {
            peer_bans: vec!["handshake_failures".into()],
            ..Why::default()
        };
        assert!(!ban(1, ip, &reasons, Some(&peers), &[], false).failed());
    }

    #[test]
    fn honest_validators_are_recognised_by_address_or_peer_id() {
        let ips = [Ipv4Addr::new(198, 18, 100, 1)];
        let peers = ["12D3KooWabc".to_string()];
        assert!(names_honest(
            "address 198.18.100.1/32",
            &["198.18.100.1/32".into()],
            &ips,
            &peers
        ));
        assert!(names_honest("peer 12D3KooWabc", &[], &ips, &peers));
        assert!(!names_honest(
            "address 198.18.100.101/32",
            &["198.18.100.101/32".into()],
            &ips,
            &peers
        ));
        assert!(!names_honest(
            "address 198.18.100.10/32",
            &["198.18.100.10/32".into()],
            &ips,
            &peers
        ));
    }
}

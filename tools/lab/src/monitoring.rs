//! `--monitoring`: Prometheus (Debian's package) run by the lab in the hub namespace, scraping
//! every validator; a forwarder that lets the operator reach it from the root namespace; and the
//! end-of-run check that every target is up, every rule group is healthy and every dashboard
//! panel's query returned data over the run.
//!
//! # Design
//! - The operator's port is a socket bound in the root namespace before the lab enters the hub
//!   ([`prepare`]). A socket stays in the namespace it was made in, so accepting on it from the
//!   hub still serves the root namespace, while each forwarded connection to Prometheus is
//!   opened from the hub, where Prometheus listens on its loopback.
//! - The lab runs a copy of `<dir>/prometheus/` (config and rules) from its data directory, with
//!   `targets/` holding only the lab's own `lab.json`, and Prometheus's storage beside it.
//! - Dashboards are read from `<dir>/grafana/dashboards/*.json`; each panel target's `expr`, with
//!   the Grafana variables of [`SUBSTITUTIONS`] replaced, goes through `/api/v1/query_range` over
//!   the whole run, one query at a time, each with a timeout.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::client::Client;
use crate::judge::names;
use crate::options::MonitoringOptions;
use crate::procs::{Proc, Spawner};
use crate::report::Check;
use crate::topology::{API_PORT, Topology};

/// Prometheus, as Debian's package installs it.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// The Debian package that has [`PROMETHEUS_BIN`].
pub const PROMETHEUS_PACKAGE: &str = "prometheus";
/// Where the operator reaches the lab's Prometheus by default, in the root namespace: not 9090,
/// where Debian's package may run its own service.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 19_090));
/// Where Prometheus listens, inside the hub namespace: its usual port, free there since nothing
/// else of the host lives in the hub.
pub const PROMETHEUS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9_090));
/// The label `role` of an honest validator's target. The byzantine validator (`attacker
/// equivocate`) serves no API, so it is no target.
pub const ROLE_HONEST: &str = "honest";
/// The Grafana variables and macros a panel query may use, with what the check puts in their
/// place: every instance, and the windows a 5 s scrape interval calls for.
pub const SUBSTITUTIONS: [(&str, &str); 3] = [
    ("instance", ".+"),
    ("__rate_interval", "1m"),
    ("__interval", "5s"),
];
/// The resolution of the checked range queries, seconds: the scrape interval of the shipped
/// config.
pub const QUERY_STEP_SECS: u64 = 5;
/// Longest wait for one panel query, also passed to Prometheus as the query's own timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for Prometheus to answer `/-/ready` after its start (it opens an empty
/// database in about a second).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait, once ready, for every target to be up: a scrape comes every 5 s, so this is
/// many scrapes of a node whose API is slow to start.
const TARGETS_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the lab polls Prometheus while it waits.
const POLL: Duration = Duration::from_millis(500);
/// Prometheus gets this long after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Forwarded connections at once: a browser opens about six per site, Grafana a few more.
pub const MAX_FORWARDED: usize = 32;
/// A forwarded connection with no byte in either direction for this long is closed: two
/// minutes, Prometheus's own default query timeout, so no answer in progress is cut.
pub const FORWARD_IDLE: Duration = Duration::from_secs(120);
/// Longest wait for the forwarder's connection to Prometheus.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Copy buffer of each direction of a forwarded connection, bytes.
const FORWARD_BUFFER_BYTES: usize = 16 * 1024;
/// Largest dashboard read, bytes (Grafana dashboards are tens of KiB).
const MAX_DASHBOARD_BYTES: u64 = 4 * 1024 * 1024;
/// Most dashboards read.
const MAX_DASHBOARDS: usize = 64;
/// Most files and directories copied from `<dir>/prometheus/`.
const MAX_COPIED_ENTRIES: usize = 1_000;
/// Log lines shown when Prometheus fails.
const LOG_TAIL: usize = 15;

/// The monitoring directory of the repository this lab was built from.
pub fn default_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .join("deploy")
        .join("monitoring")
}

/// The Prometheus config in a monitoring directory.
fn config_in(dir: &Path) -> PathBuf {
    dir.join("prometheus").join("prometheus.yml")
}

/// The dashboards of a monitoring directory.
fn dashboards_in(dir: &Path) -> PathBuf {
    dir.join("grafana").join("dashboards")
}

/// Fails, naming what is missing, unless `dir` holds a Prometheus config and a dashboards
/// directory.
pub fn check_dir(dir: &Path) -> Result<()> {
    let config = config_in(dir);
    if !config.is_file() {
        bail!(
            "--monitoring-dir {}: {} is missing",
            dir.display(),
            config.display()
        );
    }
    let dashboards = dashboards_in(dir);
    if !dashboards.is_dir() {
        bail!(
            "--monitoring-dir {}: the dashboards directory {} is missing",
            dir.display(),
            dashboards.display()
        );
    }
    Ok(())
}

/// Fails, naming the package, unless Prometheus is installed.
pub fn check_installed() -> Result<()> {
    if !Path::new(PROMETHEUS_BIN).is_file() {
        bail!(
            "--monitoring runs {PROMETHEUS_BIN}, which is missing: install Debian's `{PROMETHEUS_PACKAGE}` package (apt-get install --no-install-recommends {PROMETHEUS_PACKAGE})"
        );
    }
    Ok(())
}

/// The file_sd targets of the lab: every honest validator's API, labelled with its role and
/// its name.
pub fn targets_file(topo: &Topology) -> Value {
    Value::Array(
        topo.validators
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({
                    "targets": [SocketAddr::from((m.ip, API_PORT)).to_string()],
                    "labels": { "role": ROLE_HONEST, "node": format!("v{i}") },
                })
            })
            .collect(),
    )
}

/// Copies the tree `from` into `to` (created), leaving out `skip` (a path under `from`); counts
/// every entry against `budget`.
fn copy_tree(from: &Path, to: &Path, skip: &Path, budget: &mut usize) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let entries = std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let path = entry.path();
        if path == skip {
            continue;
        }
        *budget = budget.checked_sub(1).with_context(|| {
            format!(
                "{} holds more than {MAX_COPIED_ENTRIES} entries",
                from.display()
            )
        })?;
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target, skip, budget)?;
        } else {
            std::fs::copy(&path, &target)
                .with_context(|| format!("copying {} to {}", path.display(), target.display()))?;
        }
    }
    Ok(())
}

/// What [`prepare`] made, for [`Monitor::start`].
#[derive(Debug)]
pub struct Prepared {
    /// The operator's socket, in the root namespace.
    listener: std::net::TcpListener,
    /// The lab's copy of the Prometheus config.
    config: PathBuf,
    /// Prometheus's storage.
    storage: PathBuf,
    /// The dashboards to check.
    dashboards: PathBuf,
    /// Targets Prometheus should scrape.
    targets: usize,
}

/// Binds the operator's socket (call it in the root namespace, before entering the hub) and
/// writes the lab's Prometheus directory, `<run_dir>/prometheus/`: the config and rules of
/// `<dir>/prometheus/`, and `targets/lab.json` with every validator.
pub fn prepare(opts: &MonitoringOptions, run_dir: &Path, topo: &Topology) -> Result<Prepared> {
    let listener = std::net::TcpListener::bind(opts.listen).with_context(|| {
        format!(
            "binding --monitoring-listen {} (in the root namespace)",
            opts.listen
        )
    })?;
    let from = opts.dir.join("prometheus");
    let to = run_dir.join("prometheus");
    let mut budget = MAX_COPIED_ENTRIES;
    copy_tree(&from, &to, &from.join("targets"), &mut budget)?;
    let targets_dir = to.join("targets");
    std::fs::create_dir_all(&targets_dir)
        .with_context(|| format!("creating {}", targets_dir.display()))?;
    let targets = targets_file(topo);
    let path = targets_dir.join("lab.json");
    std::fs::write(&path, serde_json::to_string_pretty(&targets)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Prepared {
        listener,
        config: config_in(run_dir),
        storage: to.join("data"),
        dashboards: dashboards_in(&opts.dir),
        targets: topo.validators.len(),
    })
}

/// Prometheus running in the lab, with its forwarder.
pub struct Monitor {
    proc: Proc,
    client: Client,
    /// `http://127.0.0.1:9090`, from the hub.
    base: String,
    /// The operator's URL.
    url: String,
    /// When Prometheus started, Unix seconds.
    started: f64,
    dashboards: PathBuf,
    targets: usize,
}

/// Now, in Unix seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Monitor {
    /// Starts Prometheus in namespace `hub` as a lab child (log `<dir>/prometheus.log`) and the
    /// forwarder from the operator's socket to it, until `stop`; prints the operator's URL.
    pub async fn start(
        prepared: Prepared,
        spawner: &Spawner,
        hub: &str,
        dir: &Path,
        client: Client,
        stop: watch::Receiver<bool>,
    ) -> Result<Monitor> {
        let mut cmd = std::process::Command::new(PROMETHEUS_BIN);
        cmd.arg(format!("--config.file={}", prepared.config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prepared.storage.display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS_LISTEN}"));
        let started = unix_now();
        let proc = spawner.launch("prometheus", hub, dir, cmd, false).await?;
        let local = prepared
            .listener
            .local_addr()
            .context("the address of the monitoring socket")?;
        prepared
            .listener
            .set_nonblocking(true)
            .context("making the monitoring socket non-blocking")?;
        let listener = TcpListener::from_std(prepared.listener)
            .context("handing the monitoring socket to the runtime")?;
        tokio::spawn(forward(
            listener,
            PROMETHEUS_LISTEN,
            ForwardLimits::DEFAULT,
            stop,
        ));
        let url = format!("http://{local}");
        println!("lab: Prometheus at {url} (forwarded to {PROMETHEUS_LISTEN} in {hub})");
        Ok(Monitor {
            proc,
            client,
            base: format!("http://{PROMETHEUS_LISTEN}"),
            url,
            started,
            dashboards: prepared.dashboards,
            targets: prepared.targets,
        })
    }

    /// Fails with Prometheus's log when it has exited.
    fn check_running(&mut self) -> Result<()> {
        if !self.proc.running() {
            let status = self.proc.child.try_wait().ok().flatten();
            bail!(
                "Prometheus exited ({status:?}); last lines of {}:\n{}",
                self.proc.log.display(),
                self.proc.log_tail(LOG_TAIL).join("\n")
            );
        }
        Ok(())
    }

    /// Waits until Prometheus is ready, then until every target is up; each wait is bounded.
    pub async fn wait_up(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = format!("{}/-/ready", self.base);
        loop {
            self.check_running()?;
            if self.client.status(&ready).await.ok() == Some(200) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "Prometheus was not ready within {}s; see {}",
                    READY_TIMEOUT.as_secs(),
                    self.proc.log.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let deadline = Instant::now() + TARGETS_TIMEOUT;
        loop {
            self.check_running()?;
            let problems = match self.targets().await {
                Ok(targets) => target_problems(&targets, self.targets),
                Err(e) => vec![format!("{e:#}")],
            };
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Prometheus's targets were not all up within {}s: {}",
                    TARGETS_TIMEOUT.as_secs(),
                    problems.join("; ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET /api/v1/<path>?query` on Prometheus.
    async fn api(&self, path: &str, query: &[(&str, String)], timeout: Duration) -> Result<Value> {
        let answer = self
            .client
            .get_query(&format!("{}/api/v1/{path}", self.base), query, timeout)
            .await?;
        if answer["status"] != "success" {
            bail!("/api/v1/{path}: {answer}");
        }
        Ok(answer)
    }

    /// The active targets.
    async fn targets(&self) -> Result<Vec<TargetState>> {
        let answer = self
            .api("targets", &[("state", "active".into())], QUERY_TIMEOUT)
            .await?;
        targets_of(&answer)
    }

    /// `expr` over the run, `step` apart, up to now.
    async fn query_range(&self, expr: &str) -> Result<Value> {
        let query = [
            ("query", expr.to_string()),
            ("start", format!("{:.3}", self.started)),
            ("end", format!("{:.3}", unix_now())),
            ("step", format!("{QUERY_STEP_SECS}s")),
            ("timeout", format!("{}s", QUERY_TIMEOUT.as_secs())),
        ];
        self.api("query_range", &query, QUERY_TIMEOUT).await
    }

    /// The end-of-run check: every target up, every rule group loaded and healthy, every panel
    /// query of every dashboard with data; and, as information, the alerts that fired.
    pub async fn check(&self) -> (Check, Summary) {
        let mut problems = Vec::new();
        let targets = match self.targets().await {
            Ok(targets) => {
                problems.extend(target_problems(&targets, self.targets));
                targets
            }
            Err(e) => {
                problems.push(format!("targets: {e:#}"));
                Vec::new()
            }
        };
        let (groups, rules) = match self.api("rules", &[], QUERY_TIMEOUT).await {
            Ok(answer) => match rule_health(&answer) {
                Ok(health) => {
                    problems.extend(health.problems);
                    (health.groups, health.rules)
                }
                Err(e) => {
                    problems.push(format!("rules: {e:#}"));
                    (0, 0)
                }
            },
            Err(e) => {
                problems.push(format!("rules: {e:#}"));
                (0, 0)
            }
        };
        let (dashboards, queries) = match load_dashboards(&self.dashboards) {
            Ok((dashboards, queries, load_problems)) => {
                problems.extend(load_problems);
                (dashboards, queries)
            }
            Err(e) => {
                problems.push(format!("dashboards: {e:#}"));
                (0, Vec::new())
            }
        };
        let mut with_data = 0;
        for q in &queries {
            let expr = match substitute(&q.expr) {
                Ok(expr) => expr,
                Err(variable) => {
                    problems.push(format!(
                        "{}: panel {:?}: unknown variable {variable} in `{}`",
                        q.file, q.panel, q.expr
                    ));
                    continue;
                }
            };
            let outcome = self
                .query_range(&expr)
                .await
                .and_then(|answer| series_with_data(&answer));
            match outcome {
                Ok(0) => problems.push(format!(
                    "{}: panel {:?}: no data for `{}`",
                    q.file, q.panel, q.expr
                )),
                Ok(_) => with_data += 1,
                Err(e) => problems.push(format!(
                    "{}: panel {:?}: `{}`: {e:#}",
                    q.file, q.panel, q.expr
                )),
            }
        }
        let alerts = match self
            .query_range("ALERTS{alertstate=\"firing\"}")
            .await
            .and_then(|answer| fired_alerts(&answer, self.started))
        {
            Ok(alerts) => alerts,
            Err(e) => {
                problems.push(format!("the alerts that fired: {e:#}"));
                Vec::new()
            }
        };
        if groups == 0 {
            problems.push("Prometheus loaded no rule group".into());
        }
        if queries.is_empty() {
            problems.push(format!("no panel query in {}", self.dashboards.display()));
        }
        let up = targets.iter().filter(|t| t.health == "up").count();
        let check = match problems.first() {
            None => Check::new(
                names::MONITORING,
                true,
                format!(
                    "{up} targets up; {groups} rule groups ({rules} rules) healthy; {with_data} panel queries of {dashboards} dashboards returned data"
                ),
            ),
            Some(first) => Check::new(
                names::MONITORING,
                false,
                format!(
                    "{} problems (each below and in the report), the first: {first}",
                    problems.len()
                ),
            ),
        };
        let summary = Summary {
            url: self.url.clone(),
            targets,
            rule_groups: groups,
            rules,
            dashboards,
            panel_queries: queries.len(),
            panel_queries_with_data: with_data,
            problems,
            alerts_fired: alerts,
        };
        (check, summary)
    }

    /// Stops Prometheus (SIGTERM, SIGKILL after a grace).
    pub async fn stop(&mut self) {
        self.proc.stop(STOP_GRACE).await;
    }
}

/// One scrape target, as Prometheus saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetState {
    /// Its `node` label (`v0`, ...).
    pub node: String,
    /// Its `role` label.
    pub role: String,
    /// Its `instance` label (host:port).
    pub instance: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    /// The last scrape's error, if any.
    pub last_error: String,
}

/// What the monitoring check saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The operator's URL of the lab's Prometheus.
    pub url: String,
    /// The targets at the end.
    pub targets: Vec<TargetState>,
    /// Rule groups loaded.
    pub rule_groups: usize,
    /// Rules in them.
    pub rules: usize,
    /// Dashboards read.
    pub dashboards: usize,
    /// Panel queries evaluated.
    pub panel_queries: usize,
    /// Of those, the ones that returned data.
    pub panel_queries_with_data: usize,
    /// Everything that failed the check.
    pub problems: Vec<String>,
    /// The alerts that fired during the run (information, not a check).
    pub alerts_fired: Vec<FiredAlert>,
}

impl Summary {
    /// What to show under the check: each problem, then the alerts that fired, one line each
    /// (or one line saying none did).
    pub fn lines(&self) -> Vec<String> {
        let problems = self.problems.iter().map(|p| format!("    - {p}"));
        if self.alerts_fired.is_empty() {
            return problems
                .chain(["  alerts fired during the run: none".to_string()])
                .collect();
        }
        problems
            .chain(["  alerts fired during the run:".to_string()])
            .chain(self.alerts_fired.iter().map(|a| {
                let labels: Vec<String> =
                    a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!(
                    "    {} {{{}}}: from +{} s, about {} s",
                    a.alert,
                    labels.join(", "),
                    a.first_secs,
                    a.firing_secs
                )
            }))
            .collect()
    }
}

/// An alert that fired during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiredAlert {
    /// Its name.
    pub alert: String,
    /// Its other labels.
    pub labels: BTreeMap<String, String>,
    /// When it first fired, seconds after Prometheus started.
    pub first_secs: u64,
    /// How long it was firing, seconds (samples times the step).
    pub firing_secs: u64,
}

/// The active targets of a `/api/v1/targets` answer.
pub fn targets_of(answer: &Value) -> Result<Vec<TargetState>> {
    let list = answer["data"]["activeTargets"]
        .as_array()
        .context("a targets answer without data.activeTargets")?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(list
        .iter()
        .map(|t| TargetState {
            node: text(&t["labels"]["node"]),
            role: text(&t["labels"]["role"]),
            instance: text(&t["labels"]["instance"]),
            health: text(&t["health"]),
            last_error: text(&t["lastError"]),
        })
        .collect())
}

/// What is wrong with `targets` when `expected` are to be up.
pub fn target_problems(targets: &[TargetState], expected: usize) -> Vec<String> {
    let mut problems: Vec<String> = targets
        .iter()
        .filter(|t| t.health != "up")
        .map(|t| {
            format!(
                "target {} ({}) is {}: {}",
                t.node, t.instance, t.health, t.last_error
            )
        })
        .collect();
    if targets.len() != expected {
        problems.push(format!(
            "{} targets, expected {expected} (one per validator)",
            targets.len()
        ));
    }
    problems
}

/// Rule groups and rules of a `/api/v1/rules` answer, with each rule not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHealth {
    /// Groups loaded.
    pub groups: usize,
    /// Rules in them.
    pub rules: usize,
    /// One line per rule whose health is not `ok`.
    pub problems: Vec<String>,
}

/// Reads a `/api/v1/rules` answer.
pub fn rule_health(answer: &Value) -> Result<RuleHealth> {
    let groups = answer["data"]["groups"]
        .as_array()
        .context("a rules answer without data.groups")?;
    let mut health = RuleHealth {
        groups: groups.len(),
        rules: 0,
        problems: Vec::new(),
    };
    for g in groups {
        let group = g["name"].as_str().unwrap_or("?");
        let file = g["file"].as_str().unwrap_or("?");
        for r in g["rules"].as_array().into_iter().flatten() {
            health.rules += 1;
            let state = r["health"].as_str().unwrap_or("missing");
            if state != "ok" {
                health.problems.push(format!(
                    "rule {} of group {group} ({file}) has health {state}: {}",
                    r["name"].as_str().unwrap_or("?"),
                    r["lastError"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    Ok(health)
}

/// The series of a query answer that hold at least one sample.
pub fn series_with_data(answer: &Value) -> Result<usize> {
    let result = answer["data"]["result"]
        .as_array()
        .context("a query answer without data.result")?;
    Ok(result
        .iter()
        .filter(|s| s["values"].as_array().is_some_and(|v| !v.is_empty()) || s["value"].is_array())
        .count())
}

/// The alerts of an `ALERTS{alertstate="firing"}` range answer, by when they first fired
/// (seconds after `started`), with their own labels only.
pub fn fired_alerts(answer: &Value, started: f64) -> Result<Vec<FiredAlert>> {
    let result = answer["data"]["result"]
        .as_array()
        .context("a query answer without data.result")?;
    let mut alerts: Vec<FiredAlert> = result
        .iter()
        .map(|s| {
            let mut labels: BTreeMap<String, String> = s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let alert = labels.remove("alertname").unwrap_or_default();
            labels.remove("alertstate");
            labels.remove("__name__");
            let values = s["values"].as_array().map_or(&[][..], Vec::as_slice);
            let first = values
                .first()
                .and_then(|v| v[0].as_f64())
                .map_or(0.0, |t| (t - started).max(0.0));
            FiredAlert {
                alert,
                labels,
                first_secs: first.round() as u64,
                firing_secs: values.len() as u64 * QUERY_STEP_SECS,
            }
        })
        .collect();
    alerts.sort_by(|a, b| (a.first_secs, &a.alert).cmp(&(b.first_secs, &b.alert)));
    Ok(alerts)
}

/// `expr` with every `$name` and `${name}` of [`SUBSTITUTIONS`] replaced. Any other variable
/// is an error carrying it as written. A `$` not followed by a letter or `_` is no variable (a
/// regular expression's end, `label_replace`'s `$1`) and stays.
pub fn substitute(expr: &str) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, written_len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("${{{braced} (unterminated)"))?;
            (&braced[..end], end + 2)
        } else {
            let starts_a_name = after
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !starts_a_name {
                out.push('$');
                rest = after;
                continue;
            }
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match SUBSTITUTIONS.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => out.push_str(value),
            None => return Err(format!("${}", &after[..written_len])),
        }
        rest = &after[written_len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One query of one dashboard panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelQuery {
    /// The dashboard's file name.
    pub file: String,
    /// The panel's title.
    pub panel: String,
    /// The target's `expr`, as written.
    pub expr: String,
}

/// Every panel query of a dashboard (panels, and panels nested in rows), and a problem for
/// each target without an `expr`.
pub fn panel_queries(file: &str, dashboard: &Value) -> (Vec<PanelQuery>, Vec<String>) {
    let mut queries = Vec::new();
    let mut problems = Vec::new();
    walk_panels(file, &dashboard["panels"], &mut queries, &mut problems);
    for row in dashboard["rows"].as_array().into_iter().flatten() {
        walk_panels(file, &row["panels"], &mut queries, &mut problems);
    }
    (queries, problems)
}

fn walk_panels(
    file: &str,
    panels: &Value,
    queries: &mut Vec<PanelQuery>,
    problems: &mut Vec<String>,
) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map_or_else(|| format!("(untitled, id {})", panel["id"]), str::to_string);
        for target in panel["targets"].as_array().into_iter().flatten() {
            match target["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                Some(expr) => queries.push(PanelQuery {
                    file: file.to_string(),
                    panel: title.clone(),
                    expr: expr.to_string(),
                }),
                None => problems.push(format!("{file}: panel {title:?}: a target without an expr")),
            }
        }
        // A row's panels (a collapsed row keeps them inside it).
        walk_panels(file, &panel["panels"], queries, problems);
    }
}

/// Reads every `*.json` dashboard of `dir` (bounded in number and size): how many, their
/// panel queries, and the problems found reading them.
pub fn load_dashboards(dir: &Path) -> Result<(usize, Vec<PanelQuery>, Vec<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.len() > MAX_DASHBOARDS {
        bail!(
            "{} holds {} dashboards, more than {MAX_DASHBOARDS}",
            dir.display(),
            files.len()
        );
    }
    let (mut queries, mut problems) = (Vec::new(), Vec::new());
    for path in &files {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        match read_dashboard(path) {
            Ok(dashboard) => {
                let (q, p) = panel_queries(&name, &dashboard);
                queries.extend(q);
                problems.extend(p);
            }
            Err(e) => problems.push(format!("{name}: {e:#}")),
        }
    }
    Ok((files.len(), queries, problems))
}

fn read_dashboard(path: &Path) -> Result<Value> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_DASHBOARD_BYTES {
        bail!("{len} bytes, more than {MAX_DASHBOARD_BYTES}");
    }
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text).context("not JSON")
}

/// Bounds of the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLimits {
    /// Connections at once; more are closed on arrival.
    pub connections: usize,
    /// A connection idle this long in both directions is closed.
    pub idle: Duration,
}

impl ForwardLimits {
    /// [`MAX_FORWARDED`] and [`FORWARD_IDLE`].
    pub const DEFAULT: ForwardLimits = ForwardLimits {
        connections: MAX_FORWARDED,
        idle: FORWARD_IDLE,
    };
}

/// Accepts connections on `listener` until `stop` and forwards each to `upstream`, within
/// `limits`.
pub async fn forward(
    listener: TcpListener,
    upstream: SocketAddr,
    limits: ForwardLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        // Over the limit: closed at once.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let connect =
                tokio::time::timeout(FORWARD_CONNECT_TIMEOUT, TcpStream::connect(upstream));
            if let Ok(Ok(server)) = connect.await {
                // The connection's end, by either side or by idleness, is all there is to it.
                let _ = pipe(client, server, limits.idle).await;
            }
        });
    }
}

/// Copies bytes both ways between `a` and `b` until both have closed, or until neither sent a
/// byte for `idle`.
async fn pipe(mut a: TcpStream, mut b: TcpStream, idle: Duration) -> std::io::Result<()> {
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    let mut from_a = vec![0u8; FORWARD_BUFFER_BYTES];
    let mut from_b = vec![0u8; FORWARD_BUFFER_BYTES];
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        tokio::select! {
            n = a_read.read(&mut from_a), if a_open => {
                let n = n?;
                if n == 0 {
                    a_open = false;
                    b_write.shutdown().await?;
                } else {
                    b_write.write_all(&from_a[..n]).await?;
                }
            }
            n = b_read.read(&mut from_b), if b_open => {
                let n = n?;
                if n == 0 {
                    b_open = false;
                    a_write.shutdown().await?;
                } else {
                    a_write.write_all(&from_b[..n]).await?;
                }
            }
            () = tokio::time::sleep(idle) => {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_variables_become_their_values_and_others_are_refused() {
        let expr = r#"sum by (reason) (rate(firewall_packets_total{instance=~"$instance"}[$__rate_interval]))"#;
        assert_eq!(
            substitute(expr).unwrap(),
            r#"sum by (reason) (rate(firewall_packets_total{instance=~".+"}[1m]))"#
        );
        assert_eq!(
            substitute("x{instance=~\"${instance}\"}[$__interval]").unwrap(),
            "x{instance=~\".+\"}[5s]"
        );
        assert_eq!(substitute("rate(x[$__range])"), Err("$__range".into()));
        assert_eq!(
            substitute("x{instance=~\"$instances\"}"),
            Err("$instances".into())
        );
        assert_eq!(substitute("x{job=\"${job}\"}"), Err("${job}".into()));
        assert!(substitute("x{a=\"${instance\"}").is_err());
        let regex_and_group =
            r#"label_replace(up{instance=~".*:8080$"}, "h", "$1", "instance", "(.*):.*")"#;
        assert_eq!(substitute(regex_and_group).unwrap(), regex_and_group);
    }

    #[test]
    fn panels_in_rows_and_collapsed_rows_are_all_found() {
        let dashboard = json!({
            "panels": [
                {"id": 1, "title": "Height", "type": "timeseries",
                 "targets": [{"expr": "chain_height", "refId": "A"},
                             {"expr": "consensus_height", "refId": "B"}]},
                {"id": 2, "title": "Notes", "type": "text"},
                {"id": 3, "title": "Firewall", "type": "row", "collapsed": true, "panels": [
                    {"id": 4, "title": "Drops", "targets": [{"expr": "rate(x[1m])"}]},
                    {"id": 5, "targets": [{"refId": "A"}]}
                ]}
            ],
            "rows": [{"panels": [{"title": "Old", "targets": [{"expr": "up"}]}]}]
        });
        let (queries, problems) = panel_queries("overview.json", &dashboard);
        let found: Vec<(&str, &str)> = queries
            .iter()
            .map(|q| (q.panel.as_str(), q.expr.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("Height", "chain_height"),
                ("Height", "consensus_height"),
                ("Drops", "rate(x[1m])"),
                ("Old", "up"),
            ]
        );
        assert!(queries.iter().all(|q| q.file == "overview.json"));
        assert_eq!(
            problems,
            ["overview.json: panel \"(untitled, id 5)\": a target without an expr"]
        );
    }

    #[test]
    fn dashboards_are_read_from_json_files_and_broken_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = json!({"panels": [{"title": "Up", "targets": [{"expr": "up"}]}]});
        std::fs::write(dir.path().join("a.json"), good.to_string()).unwrap();
        std::fs::write(dir.path().join("b.json"), "{not json").unwrap();
        std::fs::write(dir.path().join("notes.md"), "not a dashboard").unwrap();
        let (count, queries, problems) = load_dashboards(dir.path()).unwrap();
        assert_eq!(count, 2);
        assert_eq!(queries.len(), 1);
        assert_eq!(queries[0].file, "a.json");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("b.json: not JSON"), "{problems:?}");
        assert!(load_dashboards(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_targets_file_lists_every_validator_api_with_its_labels() {
        let topo = Topology::new(42, 4);
        let file = targets_file(&topo);
        let groups = file.as_array().unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0]["targets"], json!(["198.18.100.1:8080"]));
        assert_eq!(groups[3]["targets"], json!(["198.18.100.4:8080"]));
        assert_eq!(groups[2]["labels"], json!({"role": "honest", "node": "v2"}));
    }

    #[test]
    fn prepare_copies_the_config_and_writes_only_the_lab_targets() {
        let src = tempfile::tempdir().unwrap();
        let prom = src.path().join("prometheus");
        std::fs::create_dir_all(prom.join("rules")).unwrap();
        std::fs::create_dir_all(prom.join("targets")).unwrap();
        std::fs::create_dir_all(src.path().join("grafana").join("dashboards")).unwrap();
        std::fs::write(prom.join("prometheus.yml"), "global: {}\n").unwrap();
        std::fs::write(prom.join("rules").join("node.yml"), "groups: []\n").unwrap();
        std::fs::write(prom.join("targets").join("prod.json"), "[]").unwrap();
        check_dir(src.path()).unwrap();
        let run = tempfile::tempdir().unwrap();
        let opts = MonitoringOptions {
            dir: src.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
        };
        let topo = Topology::new(42, 4);
        let prepared = prepare(&opts, run.path(), &topo).unwrap();
        let copy = run.path().join("prometheus");
        assert_eq!(prepared.config, copy.join("prometheus.yml"));
        assert_eq!(prepared.storage, copy.join("data"));
        assert_eq!(prepared.targets, 4);
        assert!(prepared.listener.local_addr().unwrap().port() != 0);
        assert!(copy.join("rules").join("node.yml").is_file());
        let targets: Vec<String> = std::fs::read_dir(copy.join("targets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(targets, ["lab.json"]);
        let written: Value =
            serde_json::from_slice(&std::fs::read(copy.join("targets").join("lab.json")).unwrap())
                .unwrap();
        assert_eq!(written, targets_file(&topo));
        let err = check_dir(run.path().join("nothing").as_path()).unwrap_err();
        assert!(err.to_string().contains("prometheus.yml"), "{err}");
    }

    #[test]
    fn target_states_are_read_and_every_one_must_be_up() {
        let answer = json!({"status": "success", "data": {"activeTargets": [
            {"labels": {"instance": "198.18.100.1:8080", "job": "node", "node": "v0", "role": "honest"},
             "health": "up", "lastError": ""},
            {"labels": {"instance": "198.18.100.2:8080", "job": "node", "node": "v1", "role": "honest"},
             "health": "down", "lastError": "connection refused"}
        ]}});
        let targets = targets_of(&answer).unwrap();
        assert_eq!(targets[0].node, "v0");
        assert_eq!(targets[1].health, "down");
        assert_eq!(
            target_problems(&targets, 2),
            ["target v1 (198.18.100.2:8080) is down: connection refused"]
        );
        assert!(target_problems(&targets[..1], 1).is_empty());
        assert_eq!(
            target_problems(&targets[..1], 4),
            ["1 targets, expected 4 (one per validator)"]
        );
        assert!(targets_of(&json!({"status": "success"})).is_err());
    }

    #[test]
    fn rules_must_all_be_healthy() {
        let answer = json!({"status": "success", "data": {"groups": [
            {"name": "node", "file": "rules/node.yml", "rules": [
                {"name": "NodeDown", "health": "ok", "type": "alerting"},
                {"name": "DropSurge", "health": "err", "lastError": "bad expr", "type": "alerting"}
            ]},
            {"name": "empty", "file": "rules/x.yml", "rules": []}
        ]}});
        let health = rule_health(&answer).unwrap();
        assert_eq!((health.groups, health.rules), (2, 2));
        assert_eq!(
            health.problems,
            ["rule DropSurge of group node (rules/node.yml) has health err: bad expr"]
        );
        assert!(rule_health(&json!({})).is_err());
    }

    #[test]
    fn a_query_has_data_when_a_series_has_a_sample() {
        let with = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"instance": "a"}, "values": []},
            {"metric": {"instance": "b"}, "values": [[1700000000, "3"]]}
        ]}});
        assert_eq!(series_with_data(&with).unwrap(), 1);
        let empty = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert_eq!(series_with_data(&empty).unwrap(), 0);
        let vector = json!({"data": {"result": [{"metric": {}, "value": [1, "1"]}]}});
        assert_eq!(series_with_data(&vector).unwrap(), 1);
        assert!(series_with_data(&json!({"status": "error"})).is_err());
    }

    #[test]
    fn fired_alerts_are_listed_by_first_firing_with_their_labels() {
        let answer = json!({"status": "success", "data": {"result": [
            {"metric": {"__name__": "ALERTS", "alertname": "NodeDown", "alertstate": "firing",
                        "instance": "198.18.100.4:8080", "severity": "critical"},
             "values": [[1100.0, "1"], [1105.0, "1"], [1110.0, "1"]]},
            {"metric": {"alertname": "DropSurge", "alertstate": "firing", "reason": "rate_limited"},
             "values": [[1040.2, "1"]]}
        ]}});
        let alerts = fired_alerts(&answer, 1000.0).unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].alert, "DropSurge");
        assert_eq!((alerts[0].first_secs, alerts[0].firing_secs), (40, 5));
        assert_eq!(alerts[1].alert, "NodeDown");
        assert_eq!((alerts[1].first_secs, alerts[1].firing_secs), (100, 15));
        assert_eq!(alerts[1].labels["severity"], "critical");
        assert!(!alerts[1].labels.contains_key("alertstate"));
        assert!(!alerts[1].labels.contains_key("__name__"));
        let summary = Summary {
            url: "http://127.0.0.1:19090".into(),
            targets: Vec::new(),
            rule_groups: 1,
            rules: 2,
            dashboards: 1,
            panel_queries: 1,
            panel_queries_with_data: 1,
            problems: vec!["a.json: panel \"Up\": no data for `up`".into()],
            alerts_fired: alerts,
        };
        let lines = summary.lines();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "    - a.json: panel \"Up\": no data for `up`");
        assert!(lines[3].contains("NodeDown"), "{lines:?}");
        assert!(lines[3].contains("from +100 s, about 15 s"), "{lines:?}");
    }

    /// An echo server on loopback; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` through `stream` and reads the echo.
    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        stream.write_all(msg).await.expect("writing");
        let mut back = vec![0u8; msg.len()];
        stream
            .read_exact(&mut back)
            .await
            .expect("reading the echo");
        back
    }

    /// Whether the peer closed `stream` within a second (EOF or reset).
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }

    #[tokio::test]
    async fn the_forwarder_relays_within_its_connection_limit_and_idle_timeout() {
        let upstream = echo_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let front = listener.local_addr().expect("its address");
        let (stop, stopped) = watch::channel(false);
        let limits = ForwardLimits {
            connections: 1,
            idle: Duration::from_millis(300),
        };
        let task = tokio::spawn(forward(listener, upstream, limits, stopped));
        let mut first = TcpStream::connect(front).await.expect("connecting");
        assert_eq!(round_trip(&mut first, b"ping").await, b"ping");
        let mut second = TcpStream::connect(front).await.expect("connecting");
        assert!(closed(&mut second).await, "over the limit: closed");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(closed(&mut first).await, "idle: closed");
        let mut third = TcpStream::connect(front).await.expect("connecting");
        assert_eq!(round_trip(&mut third, b"again").await, b"again");
        stop.send(true).expect("the forwarder listens");
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the forwarder stops")
            .expect("without a panic");
    }
}

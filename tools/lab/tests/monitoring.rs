//! The monitoring stack in `deploy/monitoring`: promtool accepts its Prometheus config and alert
//! rules and passes the rules' unit tests, every alert is tested firing and resolving, and every
//! dashboard panel and alert queries only metrics the node exports, in the form the lab's panel
//! checker evaluates (only `$instance` and the interval macros, no filtering comparisons, no
//! zero fallbacks).
//!
//! The promtool checks need `promtool` (Debian's `prometheus` package): without it they say
//! loudly that they skipped, and under `CI=true` they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The five dashboards the stack ships.
const DASHBOARDS: [&str; 5] = ["overview", "firewall", "p2p", "consensus", "chain"];
/// The only datasource a dashboard may use: the provisioned Prometheus.
const DATASOURCE_UID: &str = "prometheus";
/// The only panel types: the lab's checker and the dashboards' conventions know these.
const PANEL_TYPES: [&str; 2] = ["timeseries", "stat"];
/// The only way a query may use the dashboard variable.
const INSTANCE_MATCHER: &str = r#"instance=~"$instance""#;
/// The template variable's query.
const INSTANCE_QUERY: &str = "label_values(node_info, instance)";
/// What the lab's checker (`tools/lab/src/monitoring.rs`, a binary's module this test cannot
/// import) puts in place of each variable and macro before it queries Prometheus.
const SUBSTITUTIONS: [(&str, &str); 3] = [
    ("$instance", ".+"),
    ("$__rate_interval", "1m"),
    ("$__interval", "5s"),
];
/// Grafana macros a query may use, without their `$`.
const MACROS: [&str; 2] = ["__rate_interval", "__interval"];
/// Series Prometheus writes itself for every target.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];
/// The series of a histogram family (its bare name is never a series).
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];
/// Fewer families than this in docs/metrics.md means its tables were not read.
const MIN_DOCUMENTED_FAMILIES: usize = 40;

/// PromQL aggregation operators: a name, then optionally a grouping, then parentheses.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// PromQL keywords followed by a parenthesised list of label names.
const GROUPINGS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Other PromQL keywords that are not metric names.
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];
/// Set operators that keep only some of their left side's series.
const FILTERING_SET_OPERATORS: [&str; 2] = ["and", "unless"];
/// Comparison operators: without `bool` they drop the series they do not hold for.
const COMPARISONS: [&str; 6] = ["==", "!=", ">", "<", ">=", "<="];
/// Functions that make a series out of a constant: a zero fallback built with one answers even
/// when the metric is missing or misspelt, so the lab's panel check could not see it.
const FALLBACKS: [&str; 1] = ["vector"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn monitoring() -> PathBuf {
    workspace().join("deploy/monitoring")
}

fn prometheus_dir() -> PathBuf {
    monitoring().join("prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files in `dir` whose names end in `.{ext}`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{}: no .{ext} file", dir.display());
    out
}

/// A path as shown in failures: relative to the workspace.
fn shown(path: &Path) -> String {
    let root = workspace();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn assert_none(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// True when promtool can run. Without it the test says so loudly; under CI (`CI=true`) a
/// missing promtool is a failure.
fn promtool_present(test: &str) -> bool {
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        return true;
    }
    let why = format!(
        "{test} needs promtool: apt-get install -y --no-install-recommends prometheus \
         (tools/bootstrap.sh installs it)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true a check that cannot run is a failure");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// Runs promtool with `args` in `deploy/monitoring/prometheus`; its output, or a failure
/// naming `file` with promtool's own words.
fn promtool(args: &[&str], file: &str) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .unwrap_or_else(|e| panic!("promtool {}: {e}", args.join(" ")));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "deploy/monitoring/prometheus/{file}: `promtool {}` failed:\n{text}",
        args.join(" ")
    );
    text
}

/// The file name of `path` inside `deploy/monitoring/prometheus`, as promtool is given it.
fn relative(path: &Path) -> String {
    path.strip_prefix(prometheus_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

// ---- PromQL ------------------------------------------------------------------------------

/// A piece of a PromQL expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// A metric, function, keyword or label name.
    Name(&'a str),
    /// A number or a duration.
    Number,
    /// A quoted string.
    Str,
    /// An operator, a bracket or a comma.
    Punct(&'a str),
}

const TWO_CHAR_PUNCT: [&str; 6] = ["==", "!=", ">=", "<=", "=~", "!~"];
const ONE_CHAR_PUNCT: &str = "+-*/%^(){}[],=<>@:";

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Cuts `expr` into tokens; comments are skipped. Grafana variables must be substituted first.
fn lex(expr: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let end_of = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
                      keep: fn(char) -> bool| {
            while chars.next_if(|&(_, c)| keep(c)).is_some() {}
            chars.peek().map_or(expr.len(), |&(i, _)| i)
        };
        if c.is_whitespace() {
            continue;
        }
        if c == '#' {
            while chars.next_if(|&(_, c)| c != '\n').is_some() {}
        } else if matches!(c, '"' | '\'' | '`') {
            let mut closed = false;
            while let Some((_, d)) = chars.next() {
                if d == '\\' && c != '`' {
                    chars.next();
                } else if d == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(format!("unterminated string at byte {start}"));
            }
            tokens.push(Token::Str);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.peek().is_some_and(|&(_, d)| d.is_ascii_digit()))
        {
            end_of(&mut chars, |c| c.is_ascii_alphanumeric() || c == '.');
            tokens.push(Token::Number);
        } else if is_name_start(c) {
            let end = end_of(&mut chars, is_name_char);
            tokens.push(Token::Name(&expr[start..end]));
        } else if let Some(two) = expr
            .get(start..start + 2)
            .filter(|s| TWO_CHAR_PUNCT.contains(s))
        {
            chars.next();
            tokens.push(Token::Punct(two));
        } else if ONE_CHAR_PUNCT.contains(c) {
            tokens.push(Token::Punct(&expr[start..start + 1]));
        } else {
            return Err(format!("unexpected {c:?} at byte {start}"));
        }
    }
    Ok(tokens)
}

/// The index just past the parenthesis that closes the one at `open`.
fn past_closing(tokens: &[Token<'_>], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::Punct("(") => depth += 1,
            Token::Punct(")") => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// What a query is made of, for the checks.
#[derive(Debug, Default, PartialEq)]
struct Query<'a> {
    /// Metric names it selects.
    metrics: BTreeSet<&'a str>,
    /// Operators that drop series: comparisons without `bool`, `and`, `unless`.
    filters: Vec<&'a str>,
    /// Calls that make series up: [`FALLBACKS`].
    fallbacks: Vec<&'a str>,
}

/// Reads the metric names, the filtering operators and the fallbacks of a lexed expression.
fn analyse<'a>(tokens: &[Token<'a>]) -> Query<'a> {
    let mut query = Query::default();
    // Inside `{...}` (label matchers) or `[...]` (ranges): no metric names, no operators.
    let mut nested = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let next = tokens.get(i + 1).copied();
        match tokens[i] {
            Token::Punct("{" | "[") => nested += 1,
            Token::Punct("}" | "]") => nested = nested.saturating_sub(1),
            _ if nested > 0 => {}
            Token::Punct(op) if COMPARISONS.contains(&op) && next != Some(Token::Name("bool")) => {
                query.filters.push(op);
            }
            Token::Name(name) if GROUPINGS.contains(&name) && next == Some(Token::Punct("(")) => {
                i = past_closing(tokens, i + 1);
                continue;
            }
            Token::Name(name) if FILTERING_SET_OPERATORS.contains(&name) => {
                query.filters.push(name);
            }
            Token::Name(name) if FALLBACKS.contains(&name) && next == Some(Token::Punct("(")) => {
                query.fallbacks.push(name);
            }
            Token::Name(name)
                if KEYWORDS.contains(&name)
                    || GROUPINGS.contains(&name)
                    || AGGREGATIONS.contains(&name)
                    || next == Some(Token::Punct("(")) => {}
            Token::Name(name) => {
                query.metrics.insert(name);
            }
            _ => {}
        }
        i += 1;
    }
    query
}

/// What is wrong with the variables and macros of a dashboard query (before substitution).
fn variable_problems(expr: &str) -> Vec<String> {
    let rest = expr.replace(INSTANCE_MATCHER, "");
    let mut problems = Vec::new();
    if rest.contains("[[") {
        problems.push("uses the old [[variable]] syntax".to_string());
    }
    for (at, _) in rest.match_indices('$') {
        let after = &rest[at + 1..];
        // `$` before anything else is no variable: a regular expression's end, `$1`.
        if !after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{') {
            continue;
        }
        let name: String = after
            .chars()
            .take_while(|&c| c.is_ascii_alphanumeric() || c == '_' || c == '{')
            .collect();
        if !MACROS.contains(&name.as_str()) {
            problems.push(format!(
                "uses ${name}: only {INSTANCE_MATCHER}, $__rate_interval and $__interval are allowed"
            ));
        }
    }
    problems
}

/// The query the lab's checker sends to Prometheus for a panel's `expr`.
fn substituted(expr: &str) -> String {
    SUBSTITUTIONS
        .iter()
        .fold(expr.to_string(), |e, (from, to)| e.replace(from, to))
}

// ---- docs/metrics.md ---------------------------------------------------------------------

/// Every series name the node exports, from the tables of `docs/metrics.md` (first column the
/// name, second its type; a histogram exports only its `_bucket`, `_sum` and `_count` series,
/// never its bare name), and the series Prometheus adds itself.
fn exported(doc: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = PROMETHEUS_SERIES.iter().map(|s| s.to_string()).collect();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some(name) = rest.split('`').next() else {
            continue;
        };
        let kind = line.split('|').nth(2).map(str::trim).unwrap_or_default();
        if kind == "histogram" {
            names.extend(HISTOGRAM_SUFFIXES.iter().map(|s| format!("{name}{s}")));
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

fn exported_by_the_node() -> BTreeSet<String> {
    let names = exported(&read(&workspace().join("docs/metrics.md")));
    assert!(
        names.len() >= MIN_DOCUMENTED_FAMILIES,
        "docs/metrics.md: only {} series names read from its tables",
        names.len()
    );
    names
}

// ---- rule files --------------------------------------------------------------------------

/// One rule of a rule file, as the line reader below sees it.
#[derive(Debug, PartialEq)]
struct Rule {
    /// The alert's or the recorded series' name.
    name: String,
    /// An alerting rule (else a recording rule).
    alert: bool,
    expr: String,
    /// Every key of the rule, nested ones included (`for`, `severity`, `summary`, ...).
    keys: BTreeSet<String>,
}

/// A YAML line's indentation and its text without it.
fn indented(line: &str) -> (usize, &str) {
    let text = line.trim_start();
    (line.len() - text.len(), text)
}

/// A `key: value` line (after an optional `- `): the key and the value, or None.
fn key_value(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix("- ").unwrap_or(text);
    let (key, value) = text.split_once(':')?;
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (plain && (value.is_empty() || value.starts_with(' '))).then(|| (key, value.trim()))
}

/// A block scalar's header (`|`, `>-`, ...).
fn is_block_header(value: &str) -> bool {
    matches!(value, "|" | "|-" | "|+" | ">" | ">-" | ">+")
}

fn unquoted(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// Reads the rules of a Prometheus rule file written as ours are: `- alert:` or `- record:`
/// items whose keys are `key: value` lines, with `expr` and long texts inline or as block
/// scalars. promtool checks the YAML itself; the rule count it reports is compared with this.
fn read_rules(text: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    // Whether the lines being read belong to the last rule (not to a group after it).
    let mut in_rule = false;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let (indent, line) = indented(lines[i]);
        i += 1;
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = key_value(line) else {
            continue;
        };
        // A block scalar: its lines are the ones indented deeper than its key.
        let mut block = Vec::new();
        if is_block_header(value) {
            while i < lines.len() {
                let (deeper, content) = indented(lines[i]);
                if !content.is_empty() && deeper <= indent {
                    break;
                }
                block.push(content);
                i += 1;
            }
        }
        let value = if is_block_header(value) {
            block.join("\n").trim().to_string()
        } else {
            unquoted(value).to_string()
        };
        match key {
            "alert" | "record" if line.starts_with("- ") => {
                in_rule = true;
                rules.push(Rule {
                    name: value,
                    alert: key == "alert",
                    expr: String::new(),
                    keys: BTreeSet::new(),
                });
            }
            "name" if line.starts_with("- ") => in_rule = false,
            _ => {
                if let Some(rule) = rules.last_mut().filter(|_| in_rule) {
                    if key == "expr" {
                        rule.expr = value;
                    }
                    rule.keys.insert(key.to_string());
                }
            }
        }
    }
    rules
}

/// The rules of every rule file, with the file each is in.
fn every_rule() -> Vec<(PathBuf, Rule)> {
    files(&prometheus_dir().join("rules"), "yml")
        .into_iter()
        .flat_map(|path| {
            read_rules(&read(&path))
                .into_iter()
                .map(move |rule| (path.clone(), rule))
        })
        .collect()
}

/// How the unit tests treat one alert.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tested {
    /// A case expects it to fire.
    fires: bool,
    /// A case expects no alert of that name.
    resolves: bool,
}

/// Reads the `alert_rule_test` cases of a promtool test file: each case's `alertname` and
/// whether its `exp_alerts` is empty.
fn read_tests(text: &str) -> BTreeMap<String, Tested> {
    let mut tested: BTreeMap<String, Tested> = BTreeMap::new();
    // The case being read: its alert name and whether it expects alerts.
    let mut case: (Option<String>, Option<bool>) = (None, None);
    let mut finish = |case: &mut (Option<String>, Option<bool>)| {
        if let (Some(name), Some(fires)) = case.clone() {
            let entry = tested.entry(name).or_default();
            if fires {
                entry.fires = true;
            } else {
                entry.resolves = true;
            }
        }
        *case = (None, None);
    };
    let lines: Vec<&str> = text.lines().collect();
    for (i, raw) in lines.iter().enumerate() {
        let (indent, line) = indented(raw);
        let Some((key, value)) = key_value(line) else {
            continue;
        };
        let case_key = matches!(key, "eval_time" | "alertname" | "exp_alerts");
        if case_key && line.starts_with("- ") {
            finish(&mut case);
        }
        match key {
            "alertname" => case.0 = Some(unquoted(value).to_string()),
            "exp_alerts" => {
                let item_follows = lines[i + 1..]
                    .iter()
                    .map(|l| indented(l))
                    .find(|(_, t)| !t.is_empty() && !t.starts_with('#'))
                    .is_some_and(|(deeper, t)| t.starts_with("- ") && deeper >= indent);
                case.1 = Some(value.is_empty() && item_follows);
            }
            _ => {}
        }
    }
    finish(&mut case);
    tested
}

// ---- dashboards --------------------------------------------------------------------------

/// Every panel of a dashboard, the panels of collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let mut out = Vec::new();
    for panel in top {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// A panel as failures name it.
fn panel_name(panel: &Value) -> String {
    format!(
        "panel {:?} (id {})",
        panel["title"].as_str().unwrap_or("untitled"),
        panel["id"]
    )
}

fn is_our_datasource(ds: &Value) -> bool {
    ds["type"] == "prometheus" && ds["uid"] == DATASOURCE_UID
}

/// Every dashboard, parsed, with its path; a file that is not JSON is a failure naming it.
fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = monitoring().join("grafana/dashboards");
    let found = files(&dir, "json");
    for name in DASHBOARDS {
        let path = dir.join(format!("{name}.json"));
        assert!(found.contains(&path), "{} is missing", shown(&path));
    }
    found
        .into_iter()
        .map(|path| {
            let doc = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", shown(&path)));
            (path, doc)
        })
        .collect()
}

/// Every panel query: the dashboard's path, the panel's name and the `expr`.
fn panel_queries(dashboards: &[(PathBuf, Value)]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, doc) in dashboards {
        for panel in panels(doc) {
            for target in panel["targets"].as_array().map_or(&[][..], Vec::as_slice) {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((shown(path), panel_name(panel), expr.to_string()));
                }
            }
        }
    }
    out
}

// ---- the tests -------------------------------------------------------------------------

#[test]
fn promtool_accepts_the_prometheus_config_with_its_rule_files() {
    if !promtool_present("checking prometheus.yml") {
        return;
    }
    promtool(&["check", "config", "prometheus.yml"], "prometheus.yml");
}

#[test]
fn promtool_accepts_every_rule_file_and_finds_the_rules_the_checks_read() {
    if !promtool_present("checking the rule files") {
        return;
    }
    for path in files(&prometheus_dir().join("rules"), "yml") {
        let file = relative(&path);
        let out = promtool(&["check", "rules", &file], &file);
        let found: usize = out
            .split("SUCCESS: ")
            .nth(1)
            .and_then(|rest| rest.split(" rules found").next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{file}: no rule count in promtool's output:\n{out}"));
        let read = read_rules(&read(&path)).len();
        assert_eq!(
            read, found,
            "{file}: promtool finds {found} rules, this test's reader {read}: write the file as \
             `- alert:` / `- record:` items with `key: value` lines"
        );
    }
}

#[test]
fn promtool_passes_the_unit_tests_of_the_alert_rules() {
    if !promtool_present("running the alert rules' unit tests") {
        return;
    }
    for path in files(&prometheus_dir().join("tests"), "yml") {
        let file = relative(&path);
        promtool(&["test", "rules", &file], &file);
    }
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_one_that_resolves_it() {
    let mut tested: BTreeMap<String, Tested> = BTreeMap::new();
    for path in files(&prometheus_dir().join("tests"), "yml") {
        for (name, t) in read_tests(&read(&path)) {
            let entry = tested.entry(name).or_default();
            entry.fires |= t.fires;
            entry.resolves |= t.resolves;
        }
    }
    let mut problems = Vec::new();
    for (path, rule) in every_rule().into_iter().filter(|(_, r)| r.alert) {
        let t = tested.get(&rule.name).copied().unwrap_or_default();
        if !t.fires {
            problems.push(format!(
                "{}: alert {}: no unit test in prometheus/tests expects it to fire",
                shown(&path),
                rule.name
            ));
        }
        if !t.resolves {
            problems.push(format!(
                "{}: alert {}: no unit test in prometheus/tests expects it resolved (exp_alerts: [])",
                shown(&path),
                rule.name
            ));
        }
    }
    assert_none(&problems);
}

#[test]
fn every_alert_waits_for_its_condition_and_tells_the_operator_what_to_do() {
    let mut problems = Vec::new();
    let alerts: Vec<_> = every_rule().into_iter().filter(|(_, r)| r.alert).collect();
    assert!(!alerts.is_empty(), "no alert in prometheus/rules");
    for (path, rule) in alerts {
        for key in ["for", "severity", "summary", "description"] {
            if !rule.keys.contains(key) {
                problems.push(format!("{}: alert {}: no `{key}`", shown(&path), rule.name));
            }
        }
    }
    assert_none(&problems);
}

#[test]
fn every_dashboard_is_valid_with_unique_panel_ids_one_datasource_and_only_the_instance_variable() {
    let mut problems = Vec::new();
    for (path, doc) in dashboards() {
        let file = shown(&path);
        let mut ids = BTreeSet::new();
        for panel in panels(&doc) {
            let name = panel_name(panel);
            match panel["id"].as_u64() {
                Some(id) if !ids.insert(id) => {
                    problems.push(format!("{file}: {name}: id {id} is used twice"));
                }
                Some(_) => {}
                None => problems.push(format!("{file}: {name}: no numeric id")),
            }
            let kind = panel["type"].as_str().unwrap_or_default();
            if kind == "row" {
                continue;
            }
            if !PANEL_TYPES.contains(&kind) {
                problems.push(format!(
                    "{file}: {name}: type {kind:?}, not one of {PANEL_TYPES:?}"
                ));
            }
            if !is_our_datasource(&panel["datasource"]) {
                problems.push(format!(
                    "{file}: {name}: datasource is not {{type: prometheus, uid: {DATASOURCE_UID}}}"
                ));
            }
            let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
            if targets.is_empty() {
                problems.push(format!("{file}: {name}: no targets"));
            }
            for target in targets {
                let refid = target["refId"].as_str().unwrap_or("?");
                if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                    problems.push(format!("{file}: {name}: target {refid} has no expr"));
                }
                if !target["datasource"].is_null() && !is_our_datasource(&target["datasource"]) {
                    problems.push(format!(
                        "{file}: {name}: target {refid}: datasource is not {DATASOURCE_UID}"
                    ));
                }
            }
        }
        let variables = doc["templating"]["list"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        for var in variables {
            let var_name = var["name"].as_str().unwrap_or("?");
            if var_name != "instance" {
                problems.push(format!(
                    "{file}: variable {var_name:?}: only `instance` is allowed"
                ));
                continue;
            }
            let query = var["query"]["query"]
                .as_str()
                .or_else(|| var["query"].as_str())
                .unwrap_or_default();
            if query != INSTANCE_QUERY {
                problems.push(format!(
                    "{file}: variable instance: query {query:?}, not {INSTANCE_QUERY:?}"
                ));
            }
            if var["multi"] != true || var["includeAll"] != true {
                problems.push(format!(
                    "{file}: variable instance: must be multi-value with All included"
                ));
            }
        }
    }
    assert_none(&problems);
}

#[test]
fn every_panel_query_keeps_its_zeros_and_uses_only_the_instance_variable_and_interval_macros() {
    let mut problems = Vec::new();
    for (file, panel, expr) in panel_queries(&dashboards()) {
        for problem in variable_problems(&expr) {
            problems.push(format!("{file}: {panel}: {problem}: {expr}"));
        }
        match lex(&substituted(&expr)) {
            Err(e) => problems.push(format!("{file}: {panel}: unreadable query ({e}): {expr}")),
            Ok(tokens) => {
                for op in analyse(&tokens).filters {
                    problems.push(format!(
                        "{file}: {panel}: `{op}` filters series away (zeros are data): {expr}"
                    ));
                }
            }
        }
    }
    assert_none(&problems);
}

#[test]
fn no_panel_query_makes_a_series_up_with_a_zero_fallback() {
    let mut problems = Vec::new();
    for (file, panel, expr) in panel_queries(&dashboards()) {
        let query = substituted(&expr);
        // A query that does not lex fails the test above.
        let Ok(tokens) = lex(&query) else {
            continue;
        };
        for call in analyse(&tokens).fallbacks {
            problems.push(format!(
                "{file}: {panel}: `{call}(...)` makes a series up, so the panel shows data even \
                 when its metric is missing or misspelt (the node writes its zeros itself): {expr}"
            ));
        }
    }
    assert_none(&problems);
}

#[test]
fn every_panel_and_alert_queries_only_metrics_the_node_exports() {
    let rules = every_rule();
    // Series our own recording rules make count as exported: their expressions are checked.
    let mut known = exported_by_the_node();
    known.extend(
        rules
            .iter()
            .filter(|(_, r)| !r.alert)
            .map(|(_, r)| r.name.clone()),
    );
    let mut queries: Vec<(String, String)> = panel_queries(&dashboards())
        .into_iter()
        .map(|(file, panel, expr)| (format!("{file}: {panel}"), substituted(&expr)))
        .collect();
    let mut problems = Vec::new();
    for (path, rule) in rules {
        let kind = if rule.alert { "alert" } else { "record" };
        let place = format!("{}: {kind} {}", shown(&path), rule.name);
        if rule.expr.is_empty() {
            problems.push(format!("{place}: no expr"));
        } else {
            queries.push((place, rule.expr));
        }
    }
    for (place, expr) in &queries {
        match lex(expr) {
            Err(e) => problems.push(format!("{place}: unreadable query ({e}): {expr}")),
            Ok(tokens) => {
                for metric in analyse(&tokens).metrics {
                    if !known.contains(metric) {
                        problems.push(format!(
                            "{place}: {metric} is not a series the node exports (docs/metrics.md)"
                        ));
                    }
                }
            }
        }
    }
    assert_none(&problems);
}

// ---- the readers themselves ----------------------------------------------------------------

fn metrics_of(expr: &str) -> Vec<&str> {
    let tokens = lex(expr).expect("a valid query");
    analyse(&tokens).metrics.into_iter().collect()
}

fn filters_of(expr: &str) -> Vec<&str> {
    let tokens = lex(expr).expect("a valid query");
    analyse(&tokens).filters
}

fn fallbacks_of(expr: &str) -> Vec<&str> {
    let tokens = lex(expr).expect("a valid query");
    analyse(&tokens).fallbacks
}

#[test]
fn the_query_reader_finds_metric_names_but_not_functions_labels_keywords_or_strings() {
    let expr = r#"histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{le!="1", x=~"y|z"}[1m:5s])))
        / on (instance) group_left (job) b offset 5m
        or on () label_replace(vector(0), "reason", "none", "", "") # a comment naming d
        + sum(c) without (mode) - topk(3, max_over_time(e[5m]))"#;
    assert_eq!(metrics_of(expr), ["a_bucket", "b", "c", "e"]);
    assert_eq!(metrics_of("inf + nan * time()"), Vec::<&str>::new());
    assert_eq!(metrics_of("x * on (i) group_left y"), ["x", "y"]);
}

#[test]
fn a_comparison_without_bool_or_a_set_filter_is_found_and_matchers_are_not() {
    assert_eq!(filters_of("x > 0"), [">"]);
    assert_eq!(filters_of("x != 0"), ["!="]);
    assert_eq!(filters_of("x unless y and z"), ["unless", "and"]);
    assert!(filters_of("x > bool 0").is_empty());
    assert!(filters_of(r#"x{a!="b", c=~"d"} or y[1m]"#).is_empty());
}

#[test]
fn a_zero_fallback_is_found_and_a_metric_string_or_comment_named_like_one_is_not() {
    assert_eq!(
        fallbacks_of(r#"sum by (r) (x) or on () label_replace(vector(0), "r", "none", "", "")"#),
        ["vector"]
    );
    assert_eq!(fallbacks_of("x or vector (0)"), ["vector"]);
    assert!(fallbacks_of(r#"vector_total + vector{a="vector(0)"} # vector(1)"#).is_empty());
}

#[test]
fn only_the_instance_matcher_and_the_interval_macros_pass_the_variable_check() {
    assert!(variable_problems(r#"rate(x{instance=~"$instance"}[$__rate_interval])"#).is_empty());
    assert!(variable_problems("x[$__interval]").is_empty());
    assert!(variable_problems(r#"label_replace(x, "a", "$1", "b", "(.*)$")"#).is_empty());
    assert_eq!(variable_problems(r#"x{instance="$instance"}"#).len(), 1);
    assert_eq!(variable_problems(r#"x{job=~"$job"}"#).len(), 1);
    assert_eq!(variable_problems("x[$__interval_ms]").len(), 1);
    assert_eq!(variable_problems("x[${__interval}]").len(), 1);
    assert_eq!(variable_problems(r#"x{instance=~"[[instance]]"}"#).len(), 1);
    assert_eq!(
        substituted(r#"rate(x{instance=~"$instance"}[$__rate_interval]) + y[$__interval]"#),
        r#"rate(x{instance=~".+"}[1m]) + y[5s]"#
    );
}

#[test]
fn the_metrics_page_gives_each_family_its_series_and_a_histogram_only_its_suffixed_ones() {
    let doc = "| Name | Type | Labels |\n| --- | --- | --- |\n\
               | `a_total` | counter | none |\n| `b_seconds` | histogram | `le` |\n";
    let names: Vec<String> = exported(doc).into_iter().collect();
    assert_eq!(
        names,
        [
            "a_total",
            "b_seconds_bucket",
            "b_seconds_count",
            "b_seconds_sum",
            "up"
        ]
    );
}

#[test]
fn the_rule_reader_takes_inline_and_block_expressions_and_every_key() {
    let text = r#"groups:
  - name: g
    rules:
      - alert: A
        expr: up{job="node"} == 0
        for: 1m
        labels:
          severity: critical
        annotations:
          description: >-
            looks like: a key
      # a comment
      - record: r:b
        expr: |
          sum(x)
          + sum(y)
"#;
    let rules = read_rules(text);
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].name, "A");
    assert!(rules[0].alert);
    assert_eq!(rules[0].expr, r#"up{job="node"} == 0"#);
    let keys: Vec<&str> = rules[0].keys.iter().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "annotations",
            "description",
            "expr",
            "for",
            "labels",
            "severity"
        ]
    );
    assert_eq!(rules[1].name, "r:b");
    assert!(!rules[1].alert);
    assert_eq!(rules[1].expr, "sum(x)\n+ sum(y)");
}

#[test]
fn the_test_reader_tells_firing_cases_from_resolved_ones() {
    let text = r#"tests:
  - interval: 5s
    alert_rule_test:
      - eval_time: 1m
        alertname: A
        exp_alerts:
          - exp_labels:
              severity: critical
      - eval_time: 2m
        alertname: A
        exp_alerts: []
      - alertname: B
        eval_time: 1m
        exp_alerts:
      - exp_alerts:
          - exp_labels: {}
        alertname: C
        eval_time: 1m
"#;
    let tested = read_tests(text);
    let both = Tested {
        fires: true,
        resolves: true,
    };
    let resolves = Tested {
        fires: false,
        resolves: true,
    };
    let fires = Tested {
        fires: true,
        resolves: false,
    };
    assert_eq!(tested.get("A"), Some(&both));
    assert_eq!(tested.get("B"), Some(&resolves));
    assert_eq!(tested.get("C"), Some(&fires));
}

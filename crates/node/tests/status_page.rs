//! The status page in a real browser: a single validator serves it, Debian's headless Chromium
//! loads it, driven over the DevTools protocol, and the test checks that the height and the
//! charts move, that the ban an operator made is listed, that the page throws and logs no error,
//! keeps a screenshot of it, and then that the page shows an outage of the node and recovers
//! from it by itself.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::LocalNet;

/// The browser, from Debian's package [`CHROMIUM_PACKAGE`].
const CHROMIUM: &str = "/usr/bin/chromium";
/// The Debian package that installs [`CHROMIUM`].
const CHROMIUM_PACKAGE: &str = "chromium";
/// Longest wait for the node to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the chain to reach a height.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for Chromium to print its DevTools endpoint.
const BROWSER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the answer to one DevTools command, or for the page's load event.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the page to show a height, chart points and its tables, or to show a change
/// of the node's state (down, up again).
const PAGE_TIMEOUT: Duration = Duration::from_secs(40);
/// How often the page's state is read while waiting for it.
const READ_PERIOD: Duration = Duration::from_millis(250);
/// How long the page is watched between two readings: three polls of `/v1/status` (every 2 s)
/// and about twenty blocks (one every ~300 ms).
const OBSERVE: Duration = Duration::from_secs(6);
/// The browser window, CSS pixels: a laptop screen.
const VIEWPORT: (u32, u32) = (1400, 1000);
/// Fewest bytes of a screenshot of the drawn page: an empty or blank page compresses to a few
/// kilobytes.
const MIN_SCREENSHOT_BYTES: usize = 30_000;
/// The net an operator blocks before the page opens (TEST-NET-2, RFC 5737), for the page's ban list.
const BLOCKED_NET: &str = "198.51.100.0/24";
/// That block's lifetime, seconds: longer than the test.
const BLOCK_TTL_SECS: u64 = 600;

/// The page's state as the test reads it: the text of `#height`, the `data-points` of every
/// chart, the connection state, and the rows of the ban and validator tables.
const READ_STATE: &str = r#"JSON.stringify({
  height: document.getElementById('height').textContent,
  charts: Object.fromEntries([...document.querySelectorAll('canvas[data-points]')]
    .map((c) => [c.id, Number(c.dataset.points)])),
  connection: document.getElementById('conn').dataset.state,
  connection_text: document.getElementById('conn-text').textContent,
  visibility: document.visibilityState,
  bans: [...document.querySelectorAll('#bans tr')].map((r) => r.textContent),
  validators: [...document.querySelectorAll('#validators tr')].map((r) => r.textContent),
})"#;

/// True when Chromium is installed. Otherwise it says loudly why the test skips; under CI
/// (`CI=true`) it fails instead.
fn chromium_installed(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let why = format!(
        "{test} needs {CHROMIUM}: apt-get install --no-install-recommends {CHROMIUM_PACKAGE}"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true a test that cannot run is a failure");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
    false
}

/// A headless Chromium in its own process group with a throwaway profile; the whole group is
/// killed on drop, on every path out of the test.
struct Browser {
    child: Child,
    /// The DevTools endpoint of the browser (`ws://127.0.0.1:<port>/devtools/browser/<id>`).
    endpoint: String,
    log: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--disable-background-networking",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMIUM} does not start: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, endpoint) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.trim().to_string());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        // The guard exists before the wait, so a browser that never answers is killed too.
        let mut browser = Browser {
            child,
            endpoint: String::new(),
            log,
            _profile: profile,
        };
        browser.endpoint = endpoint
            .recv_timeout(BROWSER_START_TIMEOUT)
            .unwrap_or_else(|_| {
                panic!(
                    "Chromium printed no DevTools endpoint within {BROWSER_START_TIMEOUT:?}:\n{}",
                    browser.log().join("\n")
                )
            });
        browser
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser leads its own group: its renderer and helper processes go with it.
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the group is the one this test started.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools protocol client on the browser's endpoint, with one page attached (flat
/// sessions); events are kept in arrival order.
struct DevTools {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    events: Vec<Value>,
}

impl DevTools {
    /// Connects and opens a page of `VIEWPORT` with the Page, Runtime and Log domains on.
    async fn open_page(endpoint: &str) -> DevTools {
        let (socket, _) =
            tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(endpoint))
                .await
                .expect("the DevTools endpoint answers in time")
                .expect("the DevTools endpoint accepts a WebSocket");
        let mut devtools = DevTools {
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
        };
        let target = devtools
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = devtools
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        devtools.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        for domain in ["Page", "Runtime", "Log"] {
            devtools.call(&format!("{domain}.enable"), json!({})).await;
        }
        let (width, height) = VIEWPORT;
        devtools
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        devtools
    }

    /// Sends `method` (to the page once attached) and returns its result; events read while
    /// waiting are kept.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .unwrap_or_else(|e| panic!("sending {method}: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let message = self
                .next_message(deadline)
                .await
                .unwrap_or_else(|| panic!("no answer to {method} within {CALL_TIMEOUT:?}"));
            if message["id"] == id {
                assert!(
                    message.get("error").is_none(),
                    "{method} failed: {}",
                    message["error"]
                );
                return message["result"].clone();
            }
            self.events.push(message);
        }
    }

    /// The next message before `deadline`, or none when it passes.
    async fn next_message(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?
                .expect("the DevTools connection stays open")
                .expect("a valid DevTools message");
            if let Message::Text(text) = message {
                return Some(serde_json::from_str(text.as_str()).expect("DevTools sends JSON"));
            }
        }
    }

    /// Keeps the events that arrive during `period`.
    async fn watch(&mut self, period: Duration) {
        let until = Instant::now() + period;
        while let Some(message) = self.next_message(until).await {
            self.events.push(message);
        }
    }

    /// Waits for the page's event `method`, kept already or arriving within [`CALL_TIMEOUT`].
    async fn wait_event(&mut self, method: &str) -> Value {
        let session = self.session.clone();
        let seen = |e: &Value| e["method"] == method && e["sessionId"] == session.as_str();
        if let Some(event) = self.events.iter().find(|e| seen(e)) {
            return event.clone();
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let message = self
                .next_message(deadline)
                .await
                .unwrap_or_else(|| panic!("no {method} within {CALL_TIMEOUT:?}"));
            self.events.push(message.clone());
            if seen(&message) {
                return message;
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value; an exception fails the test.
    async fn evaluate(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "evaluating `{expression}` threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// The page's state ([`READ_STATE`]).
    async fn state(&mut self) -> PageState {
        let text = self.evaluate(READ_STATE).await;
        let value: Value = serde_json::from_str(text.as_str().expect("a JSON string"))
            .expect("the page state is JSON");
        let digits: String = value["height"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let points = |id: &str| value["charts"][id].as_u64();
        let rows = |table: &str| -> Vec<String> {
            value[table]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        PageState {
            height: digits.parse().ok(),
            height_points: points("chart-height"),
            finality_points: points("chart-finality"),
            drop_points: points("chart-drops"),
            connection: value["connection"].as_str().unwrap_or_default().to_string(),
            connection_text: value["connection_text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            visibility: value["visibility"].as_str().unwrap_or_default().to_string(),
            bans: rows("bans"),
            validators: rows("validators"),
        }
    }

    /// Reads the page's state until `ready` holds, failing after [`PAGE_TIMEOUT`].
    async fn wait_for(&mut self, what: &str, ready: impl Fn(&PageState) -> bool) -> PageState {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let state = self.state().await;
            if ready(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not show {what} within {PAGE_TIMEOUT:?}: {state:?}\nthe page says \"{}\" and is {}\nerrors: {:#?}",
                state.connection_text,
                state.visibility,
                self.errors()
            );
            self.watch(READ_PERIOD).await;
        }
    }

    /// Exceptions the page threw, and errors it wrote to the console.
    fn exceptions(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| {
                e["method"] == "Runtime.exceptionThrown"
                    || (e["method"] == "Runtime.consoleAPICalled"
                        && ["error", "assert"]
                            .contains(&e["params"]["type"].as_str().unwrap_or("")))
            })
            .collect()
    }

    /// [`DevTools::exceptions`] and the errors the browser logged for the page (failed
    /// requests, security policy violations).
    fn errors(&self) -> Vec<&Value> {
        let logged = self.events.iter().filter(|e| {
            e["method"] == "Log.entryAdded" && e["params"]["entry"]["level"] == "error"
        });
        self.exceptions().into_iter().chain(logged).collect()
    }
}

/// The test's [`LocalNet`]; prints the end of the node's log when the test fails.
struct Net(LocalNet);

impl std::ops::Deref for Net {
    type Target = LocalNet;
    fn deref(&self) -> &LocalNet {
        &self.0
    }
}

impl std::ops::DerefMut for Net {
    fn deref_mut(&mut self) -> &mut LocalNet {
        &mut self.0
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.eprint_logs(LOG_TAIL_LINES);
        }
    }
}

/// Lines of the node's log shown when the test fails.
const LOG_TAIL_LINES: usize = 80;

/// What the test reads from the page.
#[derive(Debug, Clone)]
struct PageState {
    height: Option<u64>,
    height_points: Option<u64>,
    finality_points: Option<u64>,
    drop_points: Option<u64>,
    connection: String,
    /// For failure messages: what the page says of its connection, and whether the browser
    /// considers it visible (hidden pages get their timers throttled).
    connection_text: String,
    visibility: String,
    bans: Vec<String>,
    validators: Vec<String>,
}

impl PageState {
    /// The page shows a height, points on the height and finality charts, and its tables.
    fn drawn(&self) -> bool {
        self.height.is_some_and(|h| h > 0)
            && self.height_points.is_some_and(|n| n > 0)
            && self.finality_points.is_some_and(|n| n > 0)
            && !self.bans.is_empty()
            && !self.validators.is_empty()
    }
}

/// Width and height of a PNG, after checking its signature, its header chunk and its end.
fn png_size(png: &[u8]) -> (u32, u32) {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    const END: &[u8] = b"\0\0\0\0IEND\xae\x42\x60\x82";
    assert!(png.starts_with(SIGNATURE), "no PNG signature");
    assert!(
        png.len() > 24 && &png[12..16] == b"IHDR",
        "no PNG header chunk"
    );
    assert!(
        png.ends_with(END),
        "the PNG does not end with its IEND chunk"
    );
    let word = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (word(16), word(20))
}

/// Where the screenshot goes: `$CARGO_TARGET_DIR`, else the target directory this test binary
/// was built in (`<target>/debug/deps/<test>`).
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            exe.ancestors().nth(3).map(Path::to_path_buf)
        })
        .expect("a target directory");
    target.join("status-page.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_a_live_chain_in_headless_chromium_and_rides_out_an_outage() {
    let test = "the_status_page_draws_a_live_chain_in_headless_chromium_and_rides_out_an_outage";
    if !chromium_installed(test) {
        return;
    }
    let mut net = Net(LocalNet::init(1));
    net.start(0, &[]);
    net.wait_healthy(0, START_TIMEOUT);
    net.wait_height(0, 2, PROGRESS_TIMEOUT);
    let body = format!("{{\"net\":\"{BLOCKED_NET}\",\"ttl_secs\":{BLOCK_TTL_SECS}}}");
    let (status, answer) = common::http_post(
        &format!("{}/v1/admin/firewall/block", net.admin(0)),
        &body,
        Some(&net.admin_token(0)),
    )
    .expect("the admin API answers");
    assert_eq!(status, 200, "{answer}");

    let browser = Browser::launch();
    let mut page = DevTools::open_page(&browser.endpoint).await;
    let url = format!("{}/", net.api(0));
    let navigated = page.call("Page.navigate", json!({"url": url})).await;
    assert!(
        navigated.get("errorText").is_none(),
        "navigating to {url}: {navigated}"
    );
    page.wait_event("Page.loadEventFired").await;
    let location = page.evaluate("location.pathname").await;
    assert_eq!(location, "/status", "`/` leads to the status page");

    let first = page
        .wait_for("a height, chart points and its tables", PageState::drawn)
        .await;
    page.watch(OBSERVE).await;
    let second = page.state().await;

    let errors = page.errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    let (h1, h2) = (first.height.unwrap_or(0), second.height.unwrap_or(0));
    assert!(h2 > h1, "#height moved from {h1} to {h2} in {OBSERVE:?}");
    for (chart, before, after) in [
        ("height", first.height_points, second.height_points),
        ("finality", first.finality_points, second.finality_points),
    ] {
        assert!(
            after > before,
            "the {chart} chart went from {before:?} to {after:?} points in {OBSERVE:?}"
        );
    }
    assert_eq!(
        second.drop_points,
        Some(0),
        "without a kernel filter the drops chart has nothing to draw"
    );
    assert_eq!(second.connection, "live", "{second:?}");
    let ban = second.bans.join("\n");
    assert!(
        ban.contains(&format!("address {BLOCKED_NET}")) && ban.contains("manual"),
        "the operator's block is listed with its reason: {ban}"
    );
    assert_eq!(second.validators.len(), 1, "{second:?}");
    assert!(
        second.validators[0].contains("yes"),
        "the single validator signed the last commit: {second:?}"
    );

    let layout = page.call("Page.getLayoutMetrics", json!({})).await;
    let size = &layout["cssContentSize"];
    let (width, height) = (
        size["width"].as_f64().unwrap_or(f64::from(VIEWPORT.0)),
        size["height"].as_f64().unwrap_or(f64::from(VIEWPORT.1)),
    );
    let shot = page
        .call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("the screenshot is base64");
    let path = screenshot_path();
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("status page screenshot: {}", path.display());
    let (w, h) = png_size(&png);
    assert!(
        w >= VIEWPORT.0 && h >= VIEWPORT.1 * 3 / 4,
        "a {w}x{h} screenshot of a {VIEWPORT:?} window"
    );
    assert!(
        png.len() >= MIN_SCREENSHOT_BYTES,
        "a {} byte screenshot is too small to show the drawn page",
        png.len()
    );

    // The node dies: the page says so. It comes back on its store: the page reconnects by
    // itself (the browser logs the refused requests meanwhile, but the page throws nothing).
    net.kill(0);
    let down = page
        .wait_for("the node's outage", |s| s.connection == "disconnected")
        .await;
    net.start(0, &[]);
    net.wait_healthy(0, START_TIMEOUT);
    let before = down.height.unwrap_or(0);
    // Points are merged per half second, so a new block need not add one at once: wait for
    // the chart to gain a point, not only for the height.
    let back = page
        .wait_for(
            &format!(
                "the node back, new blocks, and the height chart going on (at the outage: {down:?})"
            ),
            |s| {
                s.connection == "live"
                    && s.height.is_some_and(|h| h > before)
                    && s.height_points > down.height_points
            },
        )
        .await;
    assert!(back.height_points > down.height_points);
    let exceptions = page.exceptions();
    assert!(
        exceptions.is_empty(),
        "the page threw during the outage: {exceptions:#?}"
    );
}

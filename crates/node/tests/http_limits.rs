//! The API servers' connection limits against a real `node run`: the bound on connections per
//! client address, the header read timeout (slow and idle clients are closed), the event stream
//! over an upgraded connection, and a clean stop with connections open.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use common::{LocalNet, http_get};

/// Longest wait for a node to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection that must stay open is watched.
const STAYS_OPEN: Duration = Duration::from_millis(300);
/// Longest wait for the server to close a connection it must close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The short header timeout of these tests, milliseconds.
const HEADER_TIMEOUT_MS: u64 = 500;

/// A single validator with its configuration edited by `edit`, started and answering.
fn single(edit: impl FnOnce(&mut node::config::Config)) -> LocalNet {
    let mut net = LocalNet::init(1);
    net.edit_config(0, edit);
    net.start(0, &[]);
    net.wait_healthy(0, START_TIMEOUT);
    // The health checks' connections are given back once the server has closed them.
    std::thread::sleep(Duration::from_millis(200));
    net
}

/// `host:port` of node `i`'s public API.
fn host(net: &LocalNet, i: usize) -> String {
    net.api(i).trim_start_matches("http://").to_string()
}

fn connect(net: &LocalNet) -> TcpStream {
    TcpStream::connect(host(net, 0)).expect("the API accepts TCP connections")
}

/// True when the server closes `stream` (end of stream or reset) within `within`, whatever it
/// sends before; false when it is still open then.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return true;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("reading from the API: {e}"),
        }
    }
}

#[test]
fn connections_over_the_bound_of_a_client_are_closed_at_once_until_one_closes() {
    let net = single(|c| c.api.max_connections_per_ip = 4);
    let mut idle: Vec<TcpStream> = (0..4).map(|_| connect(&net)).collect();
    let mut fifth = connect(&net);
    assert!(
        closed_within(&mut fifth, CLOSE_TIMEOUT),
        "the 5th connection of a client is closed at once"
    );
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            !closed_within(stream, STAYS_OPEN),
            "idle connection {i} stays open"
        );
    }

    drop(idle.remove(0));
    let url = format!("{}/health", net.api(0));
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let status = loop {
        match http_get(&url) {
            Some((status, _)) => break status,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            None => panic!("no connection admitted after one of the client's was closed"),
        }
    };
    assert_eq!(status, 200);
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            !closed_within(stream, STAYS_OPEN),
            "idle connection {i} is still open"
        );
    }
}

#[test]
fn slow_and_idle_clients_are_closed_after_the_header_timeout() {
    let net = single(|c| c.api.header_timeout_ms = HEADER_TIMEOUT_MS);
    let header_timeout = Duration::from_millis(HEADER_TIMEOUT_MS);

    // A partial request line and nothing more.
    let mut slow = connect(&net);
    let opened = Instant::now();
    slow.write_all(b"GET /health HT").expect("written");
    // Nothing sent at all.
    let mut silent = connect(&net);
    assert!(
        closed_within(&mut slow, CLOSE_TIMEOUT),
        "a client that does not finish its headers is closed"
    );
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= header_timeout - Duration::from_millis(100),
        "closed by the timeout, not at once ({elapsed:?})"
    );
    assert!(
        closed_within(&mut silent, CLOSE_TIMEOUT),
        "a client that sends nothing is closed"
    );

    // A keep-alive connection gets its answer, then is closed once idle for the timeout.
    let mut kept = connect(&net);
    write!(
        kept,
        "GET /health HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(&net, 0)
    )
    .expect("written");
    kept.set_read_timeout(Some(CLOSE_TIMEOUT)).expect("timeout");
    let mut answer = [0u8; 64];
    let n = kept.read(&mut answer).expect("an answer");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert!(
        closed_within(&mut kept, CLOSE_TIMEOUT + header_timeout),
        "an idle keep-alive connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_outlives_the_header_timeout_and_holds_its_connection_slot() {
    let net = single(|c| {
        c.api.max_connections_per_ip = 2;
        c.api.header_timeout_ms = HEADER_TIMEOUT_MS;
    });
    let url = format!("{}/v1/events", net.api(0)).replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the event stream opens");

    // Block events keep coming for several header timeouts.
    let opened = Instant::now();
    let mut blocks = 0;
    while opened.elapsed() < Duration::from_millis(4 * HEADER_TIMEOUT_MS) || blocks < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("events within the timeout")
            .expect("the stream stays open")
            .expect("a valid message");
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(text.as_str()).expect("JSON event");
            if event["type"] == "block" {
                blocks += 1;
            }
        }
    }

    // The upgraded connection still counts: with it and one more open, a third is refused.
    let refused = tokio::task::spawn_blocking(move || {
        let _second = connect(&net);
        let mut third = connect(&net);
        let refused = closed_within(&mut third, CLOSE_TIMEOUT);
        (net, refused)
    });
    let (net, refused) = refused.await.expect("the check ran");
    assert!(
        refused,
        "the event stream holds one of the client's 2 slots"
    );

    socket.close(None).await.expect("close sent");
    drop(socket);
    let healthy = tokio::task::spawn_blocking(move || {
        let url = format!("{}/health", net.api(0));
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while Instant::now() < deadline {
            if http_get(&url).is_some_and(|(status, _)| status == 200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(
        healthy.await.expect("the check ran"),
        "the stream's slot is given back when it closes"
    );
}

#[test]
fn sigterm_stops_the_node_cleanly_with_connections_open() {
    let mut net = single(|_| {});
    let mut idle = connect(&net);
    let mut slow = connect(&net);
    slow.write_all(b"GET /health HT").expect("written");
    assert!(
        !closed_within(&mut idle, STAYS_OPEN),
        "the idle connection is open"
    );

    let log = net.node(0).terminate();
    assert!(
        closed_within(&mut idle, CLOSE_TIMEOUT),
        "the idle connection is closed"
    );
    assert!(
        closed_within(&mut slow, CLOSE_TIMEOUT),
        "the unfinished request's connection is closed"
    );
    assert!(
        !log.iter().any(|l| l.contains("did not stop")),
        "every API server stopped in time:\n{}",
        log.join("\n")
    );
}

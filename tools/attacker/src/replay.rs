//! `attacker replay`: sends transactions that are already committed again. As a libp2p peer it
//! asks the validator for its recent final blocks with the sync protocol (status, then ranges of
//! blocks walking back from the tip), collects their transactions, and replays each one on the
//! transactions topic and, with `--api`, through the validator's public API
//! (`POST /v1/transactions`).
//!
//! Every replay should be refused (its nonce is spent); the summary counts what the API answered,
//! by status and by refusal reason. Gossiped replays get no answer: the node's metrics and log
//! say what it did with them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use p2p::gossip::TopicKind;
use p2p::network::NetworkEvent;
use p2p::sync::{SyncRequest, SyncResponse};
use p2p::{PeerId, SyncLimits};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use types::{Encode, Genesis, SignedTransaction};

use crate::peer::{self, Peer, PeerArgs};

/// Most transactions one run may replay.
const COUNT_MAX: u64 = 10_000;
/// Highest replay rate, transactions per second.
const RATE_MAX: u32 = 1000;
/// Block requests one run may make (each for at most [`blocks_per_request`] blocks), well
/// under the node's sync budget burst.
const SYNC_REQUESTS_MAX: u32 = 16;
/// One API request fails after this long (connect, send, read).
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest API answer body read, bytes (an error answer is a few hundred).
const API_ANSWER_MAX_BYTES: usize = 64 * 1024;
/// After the last replay the peer stays this long, so the last gossip leaves.
const LINGER: Duration = Duration::from_millis(500);
/// How often the loop checks the connection and retries a lost request.
const TICK: Duration = Duration::from_millis(100);

/// Options of `attacker replay`.
#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// The validator's public API (`http://IP:PORT`): every replay is also POSTed to
    /// `/v1/transactions`.
    #[arg(long, value_parser = parse_api)]
    api: Option<SocketAddr>,
    /// Committed transactions to fetch and replay, newest first.
    #[arg(long, default_value_t = 50)]
    count: u64,
    /// Replays per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
}

/// `http://IP:PORT[/]` as a socket address (the lab has no DNS: an IP literal only).
fn parse_api(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: expected http://IP:PORT"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse()
        .map_err(|_| format!("{url:?}: expected http://IP:PORT with an IP address and a port"))
}

/// Most blocks the node serves per request (asking for more is sync abuse).
fn blocks_per_request() -> u32 {
    SyncLimits::default().max_blocks_per_request
}

/// Where fetching stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// The status is to be asked (first, or again after a lost request).
    Start,
    /// A request is in flight.
    Waiting,
    /// Blocks up to this height (inclusive) are to be asked next.
    Below(u64),
    /// Enough transactions, or no more blocks.
    Done,
}

/// Fetches committed transactions, newest first, walking back from the tip.
#[derive(Debug)]
struct Fetcher {
    state: Fetch,
    /// Transactions wanted.
    wanted: usize,
    /// Lowest height fetched so far: a restart goes on below it, never fetches twice.
    lowest: Option<u64>,
    /// Collected so far, newest first.
    txs: Vec<SignedTransaction>,
}

impl Fetcher {
    fn new(wanted: u64) -> Fetcher {
        Fetcher {
            state: Fetch::Start,
            wanted: usize::try_from(wanted).unwrap_or(usize::MAX),
            lowest: None,
            txs: Vec::new(),
        }
    }

    /// The request to make next, marking it in flight; `None` unless one is due.
    fn next_request(&mut self) -> Option<SyncRequest> {
        let request = match self.state {
            Fetch::Start => SyncRequest::Status,
            Fetch::Below(top) => {
                let span = u64::from(blocks_per_request());
                let from = top.saturating_sub(span - 1).max(1);
                SyncRequest::Blocks {
                    from,
                    count: u32::try_from(top - from + 1).unwrap_or(blocks_per_request()),
                }
            }
            Fetch::Waiting | Fetch::Done => return None,
        };
        self.state = Fetch::Waiting;
        Some(request)
    }

    /// Where to go on after a status at `height` or blocks down to `lowest`.
    fn below(&self, top: u64) -> Fetch {
        let top = match self.lowest {
            Some(lowest) => top.min(lowest.saturating_sub(1)),
            None => top,
        };
        if top == 0 || self.txs.len() >= self.wanted {
            Fetch::Done
        } else {
            Fetch::Below(top)
        }
    }

    /// Takes a sync answer: a status gives the tip to walk back from, blocks give transactions.
    /// Fails when the peer is on another chain.
    fn on_response(
        &mut self,
        response: SyncResponse,
        from: PeerId,
        genesis: &Genesis,
    ) -> Result<()> {
        self.state = match response {
            SyncResponse::Status(status) => {
                if status.genesis != genesis.hash() {
                    bail!(
                        "{from} is on another chain (genesis {}, --genesis has {})",
                        status.genesis,
                        genesis.hash()
                    );
                }
                eprintln!("{from} is at height {}", status.height);
                self.below(status.height)
            }
            SyncResponse::Blocks(blocks) => match blocks.first().map(|b| b.block.header.height) {
                None => Fetch::Done,
                Some(first) => {
                    for synced in blocks.iter().rev() {
                        for tx in synced.block.txs.iter().rev() {
                            if self.txs.len() < self.wanted {
                                self.txs.push(tx.clone());
                            }
                        }
                    }
                    self.lowest = Some(self.lowest.map_or(first, |l| l.min(first)));
                    self.below(first)
                }
            },
            SyncResponse::Refused(refusal) => {
                eprintln!("{from} refused a sync request: {refusal:?}");
                Fetch::Start
            }
        };
        Ok(())
    }
}

/// What the API answered.
#[derive(Debug, Default)]
struct ApiTally {
    /// Answers by HTTP status.
    statuses: BTreeMap<u16, u64>,
    /// Refusals by reason (`error.reason`, or `error.code` when there is no reason).
    reasons: BTreeMap<String, u64>,
    /// Requests with no readable answer.
    errors: u64,
}

impl ApiTally {
    fn count(&mut self, answer: Result<(u16, Option<String>), String>) {
        match answer {
            Ok((status, reason)) => {
                *self.statuses.entry(status).or_default() += 1;
                if let Some(reason) = reason {
                    *self.reasons.entry(reason).or_default() += 1;
                }
            }
            Err(e) => {
                if self.errors == 0 {
                    eprintln!("API request failed: {e}");
                }
                self.errors += 1;
            }
        }
    }
}

/// Runs `attacker replay`.
pub fn run(args: ReplayArgs) -> Result<()> {
    let genesis = args.peer.load()?;
    peer::in_range("--count", args.count, COUNT_MAX)?;
    peer::in_range("--rate", u64::from(args.rate), u64::from(RATE_MAX))?;
    let runtime = args.peer.run.enter()?;
    runtime.block_on(attack(&args, &genesis))
}

async fn attack(args: &ReplayArgs, genesis: &Genesis) -> Result<()> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.peer.run.duration;
    let mut peer = Peer::start(genesis, args.peer.peer.clone())?;
    let mut tick = tokio::time::interval(TICK);
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fetcher = Fetcher::new(args.count);
    let mut requests = 0u32;
    let (mut replayed, mut gossiped, mut gossip_failed) = (0usize, 0u64, 0u64);
    let mut posts: JoinSet<Result<(u16, Option<String>), String>> = JoinSet::new();
    let mut api = ApiTally::default();
    let mut done_at: Option<tokio::time::Instant> = None;
    let api_client = match args.api {
        Some(addr) => Some(api_client(addr)?),
        None => None,
    };
    loop {
        let fetched = fetcher.state == Fetch::Done;
        tokio::select! {
            _ = tokio::time::sleep_until(done_at.unwrap_or(deadline).min(deadline)) => break,
            event = peer.network.next() => match peer.handle(event) {
                Some(NetworkEvent::SyncResponse { peer: from, response, .. }) => {
                    fetcher
                        .on_response(response, from, genesis)
                        .context("fetching committed transactions")?;
                    if fetcher.state == Fetch::Done {
                        eprintln!(
                            "{:.3}s: fetched {} committed transactions in {requests} requests",
                            peer.secs(),
                            fetcher.txs.len()
                        );
                    }
                }
                // A request lost (failed, or with its connection): ask again.
                Some(NetworkEvent::SyncFailed { .. } | NetworkEvent::Disconnected(_))
                    if fetcher.state == Fetch::Waiting =>
                {
                    fetcher.state = Fetch::Start;
                }
                _ => {}
            },
            _ = tick.tick() => {
                peer.redial_if_lost();
                if !fetched && requests >= SYNC_REQUESTS_MAX && fetcher.state != Fetch::Waiting {
                    fetcher.state = Fetch::Done;
                }
                if let Some(target) = peer.target_peer().filter(|_| peer.connected())
                    && let Some(request) = fetcher.next_request()
                {
                    requests += 1;
                    peer.network.request(&target, request);
                }
            }
            _ = pace.tick(), if fetched && replayed < fetcher.txs.len() => {
                let bytes = fetcher.txs[replayed].to_bytes();
                replayed += 1;
                if peer.network.topic_peers(TopicKind::Transactions) > 0
                    && peer.network.publish(TopicKind::Transactions, bytes.clone())
                {
                    gossiped += 1;
                } else {
                    gossip_failed += 1;
                }
                if let Some((client, url)) = &api_client {
                    posts.spawn(post_transaction(client.clone(), url.clone(), bytes));
                }
                if replayed == fetcher.txs.len()
                    || (replayed as u64).is_multiple_of(peer::PROGRESS_EVERY)
                {
                    eprintln!(
                        "{:.3}s: replayed {replayed} of {}",
                        peer.secs(),
                        fetcher.txs.len()
                    );
                }
            }
            Some(answer) = posts.join_next(), if !posts.is_empty() => {
                api.count(answer.unwrap_or_else(|e| Err(e.to_string())));
            }
        }
        if fetcher.state == Fetch::Done
            && replayed == fetcher.txs.len()
            && posts.is_empty()
            && done_at.is_none()
        {
            done_at = Some(tokio::time::Instant::now() + LINGER);
        }
    }
    let unanswered = posts.len() as u64;
    posts.shutdown().await;
    api.errors += unanswered;
    let statuses: serde_json::Map<String, Value> = api
        .statuses
        .iter()
        .map(|(status, n)| (status.to_string(), json!(n)))
        .collect();
    let summary = json!({
        "attack": "replay",
        "target": args.peer.peer.to_string(),
        "fetched": fetcher.txs.len(),
        "sync_requests": requests,
        "replayed": replayed,
        "gossiped": gossiped,
        "gossip_failed": gossip_failed,
        "api": statuses,
        "api_errors": api.errors,
        "reasons": api.reasons,
        "connections": peer.connections,
        "redials": peer.redials,
        "connected_at_end": peer.connected(),
        "secs": peer::secs_since(started),
    });
    println!("{summary}");
    Ok(())
}

/// The HTTP client for the API at `addr` (bounded by [`API_TIMEOUT`], no proxy), and the URL
/// of its `/v1/transactions`.
fn api_client(addr: SocketAddr) -> Result<(reqwest::Client, reqwest::Url)> {
    let client = reqwest::Client::builder()
        .timeout(API_TIMEOUT)
        .no_proxy()
        .build()
        .context("making the HTTP client for --api")?;
    let url = reqwest::Url::parse(&format!("http://{addr}/v1/transactions"))
        .with_context(|| format!("--api http://{addr}"))?;
    Ok((client, url))
}

/// `POST /v1/transactions` with `{"tx": "<hex>"}`: the status and the refusal reason, if any.
/// The answer's body is read up to [`API_ANSWER_MAX_BYTES`].
async fn post_transaction(
    client: reqwest::Client,
    url: reqwest::Url,
    tx: Vec<u8>,
) -> Result<(u16, Option<String>), String> {
    let body = json!({ "tx": hex::encode(tx) });
    let mut response = client
        .post(url.clone())
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if answer.len() + chunk.len() > API_ANSWER_MAX_BYTES {
            return Err(format!(
                "{url}: the answer is over {API_ANSWER_MAX_BYTES} bytes"
            ));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok((status, refusal_reason(status, &answer)))
}

/// For an error status, the `error.reason` (or `error.code`) of the JSON body
/// `{"error":{"code":..,"reason":..}}`; `None` for a success or a body without either.
fn refusal_reason(status: u16, body: &[u8]) -> Option<String> {
    if (200..300).contains(&status) {
        return None;
    }
    let json = serde_json::from_slice::<Value>(body).ok()?;
    let error = &json["error"];
    error["reason"]
        .as_str()
        .or_else(|| error["code"].as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p::sync::{Status, SyncedBlock};
    use types::{Block, Commit, Hash, Header, Payload, SecretKey, Transaction};

    #[test]
    fn api_urls_are_ip_and_port() {
        assert_eq!(
            parse_api("http://10.0.0.1:8080"),
            Ok("10.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_api("http://10.0.0.1:8080/"),
            Ok("10.0.0.1:8080".parse().expect("addr"))
        );
        assert!(parse_api("10.0.0.1:8080").is_err());
        assert!(parse_api("http://node:8080").is_err());
        assert!(parse_api("http://10.0.0.1").is_err());
        assert!(parse_api("https://10.0.0.1:8080").is_err());
    }

    #[test]
    fn refusals_give_their_reason_or_code() {
        let refused =
            br#"{"error":{"code":"transaction_rejected","reason":"nonce_replay","message":"x"}}"#;
        assert_eq!(refusal_reason(422, refused), Some("nonce_replay".into()));
        let limited = br#"{"error":{"code":"rate_limited"}}"#;
        assert_eq!(refusal_reason(429, limited), Some("rate_limited".into()));
        let accepted = br#"{"hash":"ab","status":"pending"}"#;
        assert_eq!(refusal_reason(202, accepted), None);
        assert_eq!(refusal_reason(500, b"garbage"), None);
    }

    /// A one-shot HTTP server on loopback that answers every request with `answer`; its port.
    async fn answering(answer: Vec<u8>) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(&answer).await;
            }
        });
        addr
    }

    #[test]
    fn posts_are_counted_by_status_and_reason_and_oversized_answers_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let body = br#"{"error":{"code":"transaction_rejected","reason":"nonce_replay"}}"#;
            let mut answer = format!(
                "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            answer.extend_from_slice(body);
            let (client, url) = api_client(answering(answer).await).expect("client");
            assert_eq!(
                post_transaction(client, url, vec![1, 2, 3]).await,
                Ok((422, Some("nonce_replay".into())))
            );
            let big = API_ANSWER_MAX_BYTES + 1;
            let mut answer = format!(
                "HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: {big}\r\n\
                 connection: close\r\n\r\n"
            )
            .into_bytes();
            answer.resize(answer.len() + big, b' ');
            let (client, url) = api_client(answering(answer).await).expect("client");
            let e = post_transaction(client, url, vec![1])
                .await
                .expect_err("over the bound");
            assert!(e.contains("over"), "{e}");
        });
    }

    #[test]
    fn block_requests_walk_back_from_the_tip_within_the_node_limit() {
        let n = blocks_per_request();
        let mut f = Fetcher::new(10);
        assert_eq!(f.next_request(), Some(SyncRequest::Status));
        assert_eq!(f.next_request(), None, "one request in flight at a time");
        f.state = Fetch::Below(5);
        assert_eq!(
            f.next_request(),
            Some(SyncRequest::Blocks { from: 1, count: 5 })
        );
        f.state = Fetch::Below(100);
        assert_eq!(
            f.next_request(),
            Some(SyncRequest::Blocks {
                from: 100 - u64::from(n) + 1,
                count: n
            })
        );
        f.state = Fetch::Done;
        assert_eq!(f.next_request(), None);
    }

    fn block(height: u64, txs: Vec<SignedTransaction>) -> SyncedBlock {
        let header = Header {
            height,
            parent: Hash::default(),
            time_ms: 0,
            proposer: SecretKey::from_seed([7; 32]).public_key(),
            txs_root: Hash::default(),
            state_root: Hash::default(),
            validators_hash: Hash::default(),
            last_commit_hash: Hash::default(),
        };
        let block = Block {
            header,
            txs,
            last_commit: None,
        };
        let commit = Commit {
            height,
            round: 0,
            block: block.hash(),
            signatures: Vec::new(),
        };
        SyncedBlock { block, commit }
    }

    #[test]
    fn transactions_are_collected_newest_first_up_to_the_count() {
        let genesis_key = SecretKey::generate();
        let genesis = Genesis::new(
            "replay-test".parse().expect("chain id"),
            0,
            Vec::new(),
            vec![types::GenesisValidator {
                key: genesis_key.public_key(),
                stake: 1,
            }],
        )
        .expect("genesis");
        let from = PeerId::random();
        let key = SecretKey::generate();
        let tx = |nonce| {
            Transaction {
                chain_id: genesis.chain_id.clone(),
                sender: key.public_key(),
                nonce,
                fee: 1,
                payload: Payload::Transfer {
                    to: key.public_key(),
                    amount: 1,
                },
            }
            .sign(&key)
        };
        let mut f = Fetcher::new(3);
        let status = |height| {
            SyncResponse::Status(Status {
                genesis: genesis.hash(),
                height,
                tip: Hash::default(),
            })
        };
        f.on_response(status(40), from, &genesis)
            .expect("same chain");
        assert_eq!(f.state, Fetch::Below(40));
        let blocks = SyncResponse::Blocks(vec![block(9, vec![tx(0)]), block(10, vec![tx(1)])]);
        f.on_response(blocks, from, &genesis).expect("blocks");
        assert_eq!(f.state, Fetch::Below(8));
        // A restart (lost request) asks the status again and goes on below what it has.
        f.on_response(status(45), from, &genesis)
            .expect("same chain");
        assert_eq!(f.state, Fetch::Below(8));
        let blocks = SyncResponse::Blocks(vec![block(8, vec![tx(2), tx(3)])]);
        f.on_response(blocks, from, &genesis).expect("blocks");
        assert_eq!(f.state, Fetch::Done);
        let nonces: Vec<u64> = f.txs.iter().map(|t| t.tx.nonce).collect();
        assert_eq!(nonces, [1, 0, 3]);
        let other = SyncResponse::Status(Status {
            genesis: Hash::default(),
            height: 1,
            tip: Hash::default(),
        });
        assert!(f.on_response(other, from, &genesis).is_err());
        let mut empty = Fetcher::new(3);
        empty
            .on_response(SyncResponse::Blocks(Vec::new()), from, &genesis)
            .expect("no blocks");
        assert_eq!(empty.state, Fetch::Done);
        let mut fresh = Fetcher::new(3);
        fresh
            .on_response(status(0), from, &genesis)
            .expect("at genesis");
        assert_eq!(fresh.state, Fetch::Done, "nothing committed yet");
    }
}

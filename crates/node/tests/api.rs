//! The public API as a client meets it, against real `node run` processes: every endpoint's
//! good answers, its refusals of bad input (each a JSON error with its code), the event stream,
//! and the limits (body size, request rate, open streams).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};
use types::{Account, Encode, PublicKey, SecretKey, SignedTransaction};

use common::{LocalNet, error_code, error_message, send, submit_body};

/// Longest wait for a node to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a chain or network condition (blocks, peers, a commit).
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// A single validator, started and answering, and an HTTP client.
fn single(extra: &[&str]) -> (LocalNet, reqwest::Client) {
    let mut net = LocalNet::init(1);
    net.start(0, extra);
    net.wait_healthy(0, START_TIMEOUT);
    (net, reqwest::Client::new())
}

async fn get(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let (status, _, json) = send(client.get(url)).await;
    (status, json)
}

async fn get_ok(client: &reqwest::Client, url: &str) -> Value {
    let (status, body) = get(client, url).await;
    assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
    body
}

/// Asserts a JSON error answer with `status` and `code`; returns its message.
async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    let got = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.text().await.expect("body read");
    assert_eq!(got, status, "expected {status} {code}, got {got}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "error without a JSON content type ({content_type}): {body}"
    );
    let json: Value = serde_json::from_str(&body).expect("error body is JSON");
    assert_eq!(error_code(&json), code, "{body}");
    let message = error_message(&json);
    assert!(!message.is_empty(), "{body}");
    message.to_string()
}

async fn get_error(client: &reqwest::Client, url: &str, status: StatusCode, code: &str) -> String {
    expect_error(client.get(url).send().await.expect("sent"), status, code).await
}

async fn submit(client: &reqwest::Client, api: &str, tx: &SignedTransaction) -> reqwest::Response {
    client
        .post(format!("{api}/v1/transactions"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(submit_body(tx))
        .send()
        .await
        .expect("sent")
}

/// Waits until `check` returns a value, polling every 100 ms.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks an account answer's proof against its state root, and that it proves nothing else.
fn verify_account_proof(key: PublicKey, answer: &Value, written: bool) {
    let root: types::Hash = answer["state_root"].as_str().unwrap().parse().unwrap();
    let bytes = hex::decode(answer["proof"].as_str().unwrap()).expect("proof is hex");
    let account = Account {
        balance: answer["balance"].as_u64().unwrap(),
        nonce: answer["nonce"].as_u64().unwrap(),
    };
    let proof = |value: Option<Vec<u8>>| chain::StateProof {
        key: chain::StateKey::Account(key),
        value,
        proof: borsh::from_slice(&bytes).expect("proof is a borsh-encoded jmt proof"),
    };
    let value = written.then(|| account.to_bytes());
    proof(value)
        .verify(root)
        .expect("the proof verifies against state_root");
    let forged = Account {
        balance: account.balance + 1,
        ..account
    };
    assert!(
        proof(Some(forged.to_bytes())).verify(root).is_err(),
        "a proof must not verify another balance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_status_describe_a_running_single_validator() {
    let (net, client) = single(&[]);
    let api = net.api(0);
    net.wait_height(0, 1, PROGRESS_TIMEOUT);

    let health = get_ok(&client, &format!("{api}/health")).await;
    assert_eq!(health["status"], "up");
    assert!(health["uptime_secs"].as_u64().is_some());

    let ready = get_ok(&client, &format!("{api}/ready")).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["syncing"], false);
    assert_eq!(
        ready["peers"], 0,
        "a single validator is ready without peers"
    );

    let status = get_ok(&client, &format!("{api}/v1/status")).await;
    assert_eq!(status["chain_id"], net.genesis().chain_id.to_string());
    assert_eq!(status["node_key"], net.key(0).public_key().to_string());
    assert!(status["peer_id"].as_str().unwrap().starts_with("12D3"));
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["height"].as_u64().unwrap() >= 1);
    assert_eq!(status["tip"].as_str().unwrap().len(), 64);
    assert_eq!(status["validator"], true);
    assert_eq!(status["syncing"], false);
    assert!(status["signed_height"].as_u64().unwrap() >= 1);
    assert!(
        ["xdp_native", "xdp_generic", "userspace", "off"]
            .contains(&status["filter"]["mode"].as_str().unwrap())
    );
    assert!(
        status["filter"]["iface"].is_null(),
        "no --iface, no interface"
    );
    assert!(status["mempool"]["transactions"].as_u64().is_some());
    assert!(status["mempool"]["bytes"].as_u64().is_some());
    let started = status["started_ms"].as_u64().unwrap();
    assert!(started > 1_600_000_000_000 && started <= p2p::clock::now_ms());

    let metrics = client
        .get(format!("{api}/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(metrics.status(), StatusCode::OK);
    let content_type = metrics.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(metrics.text().await.unwrap().contains("# TYPE "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_by_height_hash_and_latest_agree_and_carry_their_commit() {
    let (net, client) = single(&[]);
    let api = net.api(0);
    net.wait_height(0, 3, PROGRESS_TIMEOUT);
    let key = net.key(0).public_key().to_string();

    let latest = get_ok(&client, &format!("{api}/v1/blocks/latest")).await;
    let height = latest["height"].as_u64().unwrap();
    assert!(height >= 3);
    let by_height = get_ok(&client, &format!("{api}/v1/blocks/{height}")).await;
    assert_eq!(by_height, latest);
    let hash = latest["hash"].as_str().unwrap();
    let by_hash = get_ok(&client, &format!("{api}/v1/blocks/hash/{hash}")).await;
    assert_eq!(by_hash, latest);
    assert_eq!(latest["proposer"], key);
    assert_eq!(latest["commit"]["signers"], json!([key]));
    assert!(latest["commit"]["round"].as_u64().is_some());
    assert!(latest["transactions"].is_array());
    for field in ["txs_root", "state_root", "validators_hash", "parent"] {
        assert_eq!(latest[field].as_str().unwrap().len(), 64, "{field}");
    }
    let parent = get_ok(&client, &format!("{api}/v1/blocks/{}", height - 1)).await;
    assert_eq!(latest["parent"], parent["hash"]);
    assert!(parent["time_ms"].as_u64() < latest["time_ms"].as_u64());
    // Upper-case hex names the same block.
    let upper = get_ok(
        &client,
        &format!("{api}/v1/blocks/hash/{}", hash.to_uppercase()),
    )
    .await;
    assert_eq!(upper["hash"], hash);

    let genesis = get_ok(&client, &format!("{api}/v1/blocks/0")).await;
    assert_eq!(genesis["height"], 0);
    assert!(genesis["commit"].is_null(), "genesis has no commit");

    for bad in ["abc", "-1", "1.5", "18446744073709551616"] {
        get_error(
            &client,
            &format!("{api}/v1/blocks/{bad}"),
            StatusCode::BAD_REQUEST,
            "invalid_height",
        )
        .await;
    }
    // A parameter that is not UTF-8 once decoded is still a JSON error.
    get_error(
        &client,
        &format!("{api}/v1/blocks/%FF"),
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    let message = get_error(
        &client,
        &format!("{api}/v1/blocks/{}", u64::MAX),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(message.contains("tip"), "{message}");
    for bad in ["zz", "00", &"g".repeat(64), &"0".repeat(66)] {
        get_error(
            &client,
            &format!("{api}/v1/blocks/hash/{bad}"),
            StatusCode::BAD_REQUEST,
            "invalid_hash",
        )
        .await;
    }
    get_error(
        &client,
        &format!("{api}/v1/blocks/hash/{}", "ab".repeat(32)),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_transfer_goes_pending_then_committed_and_moves_balances_under_a_verified_proof() {
    let (net, client) = single(&[]);
    let api = net.api(0);
    net.wait_height(0, 1, PROGRESS_TIMEOUT);
    let key = net.key(0);
    let sender = key.public_key();
    let recipient = SecretKey::from_seed([42; 32]).public_key();

    let before = get_ok(&client, &format!("{api}/v1/accounts/{sender}")).await;
    assert_eq!(before["key"], sender.to_string());
    let balance = before["balance"].as_u64().unwrap();
    assert!(balance > 0, "init funds every validator");
    verify_account_proof(sender, &before, true);
    let empty = get_ok(&client, &format!("{api}/v1/accounts/{recipient}")).await;
    assert_eq!(empty["balance"], 0);
    assert_eq!(empty["nonce"], 0);
    verify_account_proof(recipient, &empty, false);

    let nonce = before["nonce"].as_u64().unwrap();
    let tx = net.transfer(&key, nonce, recipient, 1_000);
    let response = submit(&client, &api, &tx).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["hash"], tx.id().to_string());
    assert_eq!(accepted["status"], "pending");

    // Right after submission it is pending, or already in a block.
    let seen = get_ok(&client, &format!("{api}/v1/transactions/{}", tx.id())).await;
    assert!(["pending", "committed"].contains(&seen["status"].as_str().unwrap()));
    assert_eq!(seen["transaction"]["kind"], "transfer");
    assert_eq!(seen["transaction"]["sender"], sender.to_string());
    assert_eq!(seen["transaction"]["to"], recipient.to_string());
    assert_eq!(seen["transaction"]["amount"], 1_000);
    assert_eq!(seen["transaction"]["fee"], 1);
    assert_eq!(seen["transaction"]["nonce"], nonce);

    let url = format!("{api}/v1/transactions/{}", tx.id());
    let (c, u) = (&client, url.as_str());
    let committed = eventually("the transfer to commit", || async move {
        let (_, body) = get(c, u).await;
        (body["status"] == "committed").then_some(body)
    })
    .await;
    let height = committed["height"].as_u64().unwrap();
    let index = committed["index"].as_u64().unwrap() as usize;
    let block = get_ok(&client, &format!("{api}/v1/blocks/{height}")).await;
    assert_eq!(
        block["transactions"][index]["hash"],
        tx.id().to_string(),
        "the block at the reported height holds it at the reported index"
    );

    let after = get_ok(&client, &format!("{api}/v1/accounts/{sender}")).await;
    assert!(after["height"].as_u64().unwrap() >= height);
    assert_eq!(after["nonce"], nonce + 1);
    // The fee goes to the proposer, which is the sender here.
    assert_eq!(after["balance"], balance - 1_000);
    verify_account_proof(sender, &after, true);
    let received = get_ok(&client, &format!("{api}/v1/accounts/{recipient}")).await;
    assert_eq!(received["balance"], 1_000);
    verify_account_proof(recipient, &received, true);

    // The same transaction again: its nonce is used.
    let message = expect_error(
        submit(&client, &api, &tx).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "transaction_rejected",
    )
    .await;
    assert!(message.starts_with("nonce_replay: "), "{message}");
    let again: Value = submit(&client, &api, &tx)
        .await
        .json()
        .await
        .expect("a JSON error");
    assert_eq!(again["error"]["reason"], "nonce_replay", "{again}");
    // More than the balance.
    let too_much = net.transfer(&key, nonce + 1, recipient, balance * 2);
    let message = expect_error(
        submit(&client, &api, &too_much).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "transaction_rejected",
    )
    .await;
    assert!(message.starts_with("insufficient_balance: "), "{message}");
    // Signed by someone else.
    let mut forged = net.transfer(&key, nonce + 1, recipient, 5);
    forged.signature = net.transfer(&key, nonce + 2, recipient, 5).signature;
    let message = expect_error(
        submit(&client, &api, &forged).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "transaction_rejected",
    )
    .await;
    assert!(message.starts_with("bad_signature: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_json_errors_that_name_the_problem() {
    let (net, client) = single(&[]);
    let api = net.api(0);
    let post = |body: String, content_type: &'static str| {
        client
            .post(format!("{api}/v1/transactions"))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let json_type = "application/json";

    let message = expect_error(
        post(r#"{"tx":"zz"}"#.into(), json_type).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_hex",
    )
    .await;
    assert!(message.contains("hex"), "{message}");
    expect_error(
        post(r#"{"tx":"00ff"}"#.into(), json_type).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_transaction",
    )
    .await;
    expect_error(
        post(r#"{"tx":"00","extra":1}"#.into(), json_type)
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    expect_error(
        post("{".into(), json_type).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    expect_error(
        post(r#"{"tx":"00"}"#.into(), "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let max_body = node::config::ApiConfig::default().max_body_bytes;
    let huge = format!(r#"{{"tx":"{}"}}"#, "0".repeat(max_body + 2));
    expect_error(
        post(huge, json_type).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;

    for bad in ["xyz", "00", &"0".repeat(64 + 2)] {
        get_error(
            &client,
            &format!("{api}/v1/accounts/{bad}"),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        )
        .await;
    }
    get_error(
        &client,
        &format!("{api}/v1/transactions/not-a-hash"),
        StatusCode::BAD_REQUEST,
        "invalid_hash",
    )
    .await;
    let message = get_error(
        &client,
        &format!("{api}/v1/transactions/{}", "cd".repeat(32)),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(
        message.contains("neither pending nor committed"),
        "{message}"
    );
    get_error(
        &client,
        &format!("{api}/v1/no/such/thing"),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        client
            .delete(format!("{api}/v1/status"))
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    expect_error(
        client
            .get(format!("{api}/v1/transactions"))
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    // The event stream asked for without an upgrade.
    let response = client.get(format!("{api}/v1/events")).send().await.unwrap();
    let status = response.status();
    assert!(status.is_client_error(), "{status}");
    expect_error(response, status, "websocket_required").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_list_the_genesis_set_with_its_stake() {
    let (net, client) = single(&[]);
    let api = net.api(0);
    let answer = get_ok(&client, &format!("{api}/v1/validators")).await;
    let genesis = net.genesis();
    let validators = answer["validators"].as_array().unwrap();
    assert_eq!(validators.len(), genesis.validators.len());
    assert_eq!(validators[0]["key"], net.key(0).public_key().to_string());
    let stake = genesis.validators[0].stake;
    assert_eq!(validators[0]["stake"], stake);
    assert_eq!(answer["total_stake"], stake);
    assert!(answer["height"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_bans_are_listed_publicly_as_the_admin_api_lists_them_and_bounded() {
    let (net, client) = single(&[]);
    let (api, admin, token) = (net.api(0), net.admin(0), net.admin_token(0));
    let none = get_ok(&client, &format!("{api}/v1/bans")).await;
    assert_eq!(none, json!({"bans": [], "total": 0, "truncated": false}));

    let block = |net: String, ttl_secs: u64| {
        client
            .post(format!("{admin}/v1/admin/firewall/block"))
            .bearer_auth(&token)
            .json(&json!({"net": net, "ttl_secs": ttl_secs}))
            .send()
    };
    for (net, ttl_secs) in [("198.51.100.0/24", 600), ("203.0.113.7/32", 300)] {
        let response = block(net.to_string(), ttl_secs).await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "blocking {net}");
    }
    let listed = get_ok(&client, &format!("{api}/v1/bans")).await;
    assert_eq!(
        (listed["total"].as_u64(), listed["truncated"].as_bool()),
        (Some(2), Some(false))
    );
    let bans = listed["bans"].as_array().unwrap();
    assert_eq!(
        bans[0]["target"], "address 203.0.113.7/32",
        "the first to expire first"
    );
    assert_eq!(bans[1]["target"], "address 198.51.100.0/24");
    for ban in bans {
        assert_eq!(ban["reason"], "manual", "{ban}");
        assert!(
            ban["until_ms"].as_u64().unwrap() > p2p::clock::now_ms(),
            "{ban}"
        );
        assert!(!ban["detail"].as_str().unwrap().is_empty(), "{ban}");
    }
    let (status, _, by_admin) = send(
        client
            .get(format!("{admin}/v1/admin/peers/bans"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed["bans"], by_admin["bans"],
        "the same bans as the admin API"
    );

    // More bans than the bound: the first to expire are listed, and the total says how many.
    let max = node::api::public::MAX_LISTED_BANS;
    for i in 0..max {
        let response = block(format!("192.0.2.{i}/32"), 900).await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "blocking 192.0.2.{i}");
    }
    let bounded = get_ok(&client, &format!("{api}/v1/bans")).await;
    assert_eq!(bounded["bans"].as_array().unwrap().len(), max);
    assert_eq!(bounded["total"].as_u64(), Some(max as u64 + 2));
    assert_eq!(bounded["truncated"], true);
    assert_eq!(bounded["bans"][0]["target"], "address 203.0.113.7/32");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_validators_are_ready_only_once_connected_and_list_each_other_as_peers() {
    let mut net = LocalNet::init(2);
    let client = reqwest::Client::new();
    net.start(0, &[]);
    net.wait_healthy(0, START_TIMEOUT);
    let message = get_error(
        &client,
        &format!("{}/ready", net.api(0)),
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
    )
    .await;
    assert!(message.contains("peer"), "{message}");

    net.start(1, &[]);
    net.wait_healthy(1, START_TIMEOUT);
    for i in 0..2 {
        let url = format!("{}/ready", net.api(i));
        let (c, u) = (&client, url.as_str());
        let ready = eventually("both validators to be ready", || async move {
            let (status, body) = get(c, u).await;
            (status == StatusCode::OK).then_some(body)
        })
        .await;
        assert_eq!(ready["ready"], true);
        assert!(ready["peers"].as_u64().unwrap() >= 1);
    }
    net.wait_height(0, 2, PROGRESS_TIMEOUT);

    for (me, other) in [(0, 1), (1, 0)] {
        let other_id = net.status(other).unwrap()["peer_id"].clone();
        let peers = get_ok(&client, &format!("{}/v1/peers", net.api(me))).await;
        let listed: Vec<&Value> = peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["peer_id"] == other_id)
            .collect();
        assert!(!listed.is_empty(), "node {me} lists node {other}: {peers}");
        for peer in listed {
            assert!(["inbound", "outbound"].contains(&peer["direction"].as_str().unwrap()));
            assert!(
                peer["address"]
                    .as_str()
                    .unwrap()
                    .starts_with("/ip4/127.0.0.1/")
            );
            assert!(
                peer["score"].as_f64().unwrap() >= 0.0,
                "an honest peer has no bad score"
            );
        }
    }
    let validators = get_ok(&client, &format!("{}/v1/validators", net.api(1))).await;
    assert_eq!(validators["validators"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_block_and_finality_events_answers_pings_and_closes_cleanly() {
    let (net, _client) = single(&[]);
    let url = format!("{}/v1/events", net.api(0)).replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the event stream opens");
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();

    let mut blocks = BTreeSet::new();
    let mut finals = BTreeSet::new();
    let mut pong = false;
    let deadline = tokio::time::Instant::now() + PROGRESS_TIMEOUT;
    while !(pong && blocks.intersection(&finals).count() >= 2) {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("block and finality events within the timeout")
            .expect("the stream stays open")
            .expect("a valid message");
        match message {
            Message::Pong(data) => {
                assert_eq!(&data[..], b"are you there");
                pong = true;
            }
            Message::Text(text) => {
                let event: Value = serde_json::from_str(text.as_str()).expect("JSON event");
                let height = event["height"].as_u64();
                match event["type"].as_str().expect("a type") {
                    "block" => {
                        assert_eq!(event["proposer"], net.key(0).public_key().to_string());
                        assert_eq!(event["hash"].as_str().unwrap().len(), 64);
                        blocks.insert(height.unwrap());
                    }
                    "finality" => {
                        assert_eq!(event["signers"], 1);
                        assert!(event["latency_ms"].as_u64().is_some());
                        finals.insert(height.unwrap());
                    }
                    other => panic!("unexpected event {other}: {text}"),
                }
            }
            other => panic!("unexpected message {other:?}"),
        }
    }
    socket.close(None).await.expect("close sent");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        true
    })
    .await;
    assert_eq!(end, Ok(true), "the server ends the stream cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_beyond_max_streams_are_refused_and_a_closed_one_frees_its_slot() {
    let mut net = LocalNet::init(1);
    net.edit_config(0, |c| c.api.max_streams = 2);
    net.start(0, &[]);
    net.wait_healthy(0, START_TIMEOUT);
    let url = format!("{}/v1/events", net.api(0)).replace("http://", "ws://");
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.expect("first");
    let (_second, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("second");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE.as_u16());
            assert!(response.headers().contains_key("retry-after"));
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("JSON error body");
            assert_eq!(error_code(&body), "too_many_streams");
        }
        Ok(_) => panic!("a third stream was accepted over max_streams = 2"),
        Err(e) => panic!("unexpected error: {e}"),
    }
    first.close(None).await.unwrap();
    let u = url.as_str();
    eventually("a closed stream's slot to be free", || async move {
        tokio_tungstenite::connect_async(u).await.ok().map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_request_rate_gets_429_with_retry_after() {
    let (net, client) = single(&["--api-rate", "1", "--api-burst", "3"]);
    let url = format!("{}/v1/status", net.api(0));
    let mut limited = None;
    for _ in 0..10 {
        let response = client.get(&url).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("10 quick requests exceed a burst of 3");
    let retry = response.headers()[reqwest::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .expect("Retry-After in seconds");
    assert!(retry >= 1);
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    tokio::time::sleep(Duration::from_secs(retry + 1)).await;
    get_ok(&client, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_the_node_serves() {
    let (net, client) = single(&[]);
    let response = client
        .get(format!("{}/openapi.json", net.api(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "application/json"
    );
    let doc: Value = response.json().await.expect("the document is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let public: BTreeSet<(String, String)> = node::api::public::ROUTES
        .iter()
        .chain(node::api::ws::ROUTES)
        .chain(node::api::status_page::ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let admin: BTreeSet<(String, String)> = documented
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/admin/"))
        .cloned()
        .collect();
    assert_eq!(
        documented
            .difference(&admin)
            .cloned()
            .collect::<BTreeSet<_>>(),
        public,
        "the public paths of openapi.json are the public routes"
    );

    // Each documented operation is served: its path and method reach a handler, not the
    // fallbacks (404 `no such endpoint`, 405).
    let token = net.admin_token(0);
    for (method, path) in &documented {
        let concrete = path
            .replace("{height}", "1")
            .replace("{hash}", &"0".repeat(64))
            .replace("{key}", &net.key(0).public_key().to_string())
            .replace("{addr}", "127.0.0.1");
        let is_admin = admin.contains(&(method.clone(), path.clone()));
        let base = if is_admin { net.admin(0) } else { net.api(0) };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method.clone(), format!("{base}{concrete}"));
        if is_admin {
            request = request.bearer_auth(&token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not served: {body}"
        );
        assert!(
            !body.contains("no such endpoint"),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
}

#[test]
fn the_event_stream_carries_operator_bans_and_sampled_kernel_drops() {
    use common::netns::{PEER_IP, XdpNamespace};
    if !common::privileged("the_event_stream_carries_operator_bans_and_sampled_kernel_drops") {
        return;
    }
    /// UDP port the blocked sender aims at.
    const PORT: u16 = 7777;
    let ns = XdpNamespace::new("xev-");
    let mut net = LocalNet::init(1);
    ns.start_node(&mut net, 0, &[]);
    let started = &mut net;
    ns.in_node_ns(|| started.wait_healthy(0, START_TIMEOUT));
    let (api, admin, token) = (net.api(0), net.admin(0), net.admin_token(0));
    let ns = &ns;
    let (ban, drop) = ns.in_node_ns(move || {
        let host = api.trim_start_matches("http://").to_string();
        let socket = std::net::TcpStream::connect(&host).expect("the API listens");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("a read timeout");
        let (mut ws, _) = tungstenite::client(format!("ws://{host}/v1/events"), socket)
            .expect("the event stream opens");
        let body = format!("{{\"net\":\"{PEER_IP}/32\"}}");
        let (status, answer) = common::http_post(
            &format!("{admin}/v1/admin/firewall/block"),
            &body,
            Some(&token),
        )
        .expect("the admin API answers");
        assert_eq!(status, 200, "{answer}");
        let (mut ban, mut drop) = (None, None);
        let deadline = Instant::now() + PROGRESS_TIMEOUT;
        while ban.is_none() || drop.is_none() {
            assert!(
                Instant::now() < deadline,
                "no ban ({ban:?}) or no drop ({drop:?}) event within {PROGRESS_TIMEOUT:?}"
            );
            ns.in_peer_ns(|| {
                let udp = std::net::UdpSocket::bind((PEER_IP, 0)).expect("a sender socket");
                for _ in 0..5 {
                    udp.send_to(b"blocked", (common::netns::NODE_IP, PORT))
                        .expect("sending a datagram");
                }
            });
            // Blocks keep the stream busy: read for a while, then send again.
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                match ws.read() {
                    Ok(Message::Text(text)) => {
                        let event: Value = serde_json::from_str(&text).expect("JSON events");
                        match event["type"].as_str() {
                            Some("ban") => ban = Some(event),
                            Some("drop") => drop = Some(event),
                            _ => {}
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("the event stream failed: {e}"),
                }
            }
        }
        (ban.expect("a ban"), drop.expect("a drop"))
    });
    assert_eq!(ban["target"], format!("address {PEER_IP}/32"), "{ban}");
    assert_eq!(ban["reason"], "manual", "{ban}");
    assert_eq!(drop["source"], PEER_IP.to_string(), "{drop}");
    assert_eq!(drop["reason"], "blocklisted", "{drop}");
    assert_eq!(drop["port"], PORT, "{drop}");
    assert_eq!(drop["protocol"], 17, "{drop}");
}

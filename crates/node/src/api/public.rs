//! The public API's routes: health, readiness, status, blocks, transactions, accounts with
//! Merkle proofs, validators, peers, active bans, metrics and the OpenAPI document.
//!
//! # Design
//! Every answer about the chain or the network is computed by one job in the runtime
//! ([`crate::runtime::Handle::call`]), so the fields of one answer describe one moment of the
//! node. Path parameters are taken as text and parsed here, so a bad one is a 400 with a code that
//! names it. [`ROUTES`] lists what [`routes`] serves; a test holds `docs/api/openapi.json` to it.

use std::str::FromStr;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chain::mempool::MempoolError;
use serde::{Deserialize, Serialize};
use types::{Account, Block, Commit, Decode, Hash, Payload, PublicKey, SignedTransaction};

use super::admin::BanView;
use super::error::{JsonBody, PathParam};
use super::{Api, ApiError, NodeStore};
use crate::runtime::Runtime;

/// The OpenAPI 3.1 description of both APIs, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../../docs/api/openapi.json");

/// Method and path of every route [`routes`] serves (paths in the router's `{param}` syntax).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/v1/status"),
    ("GET", "/v1/blocks/latest"),
    ("GET", "/v1/blocks/{height}"),
    ("GET", "/v1/blocks/hash/{hash}"),
    ("POST", "/v1/transactions"),
    ("GET", "/v1/transactions/{hash}"),
    ("GET", "/v1/accounts/{key}"),
    ("GET", "/v1/validators"),
    ("GET", "/v1/peers"),
    ("GET", "/v1/bans"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The public routes (the event stream is in [`super::ws`]).
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/status", get(status))
        .route("/v1/blocks/latest", get(latest_block))
        .route("/v1/blocks/{height}", get(block_at))
        .route("/v1/blocks/hash/{hash}", get(block_by_hash))
        .route("/v1/transactions", post(submit_transaction))
        .route("/v1/transactions/{hash}", get(transaction))
        .route("/v1/accounts/{key}", get(account))
        .route("/v1/validators", get(validators))
        .route("/v1/peers", get(peers))
        .route("/v1/bans", get(bans))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The runtime a job runs in.
type Rt = Runtime<NodeStore>;

/// Runs `f` in the runtime; its own errors and the handle's become API errors.
async fn query<T, F>(api: &Api, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Rt) -> Result<T, ApiError> + Send + 'static,
{
    api.handle.call(f).await?
}

fn now_ms() -> u64 {
    p2p::clock::now_ms()
}

// ---- health and readiness ----

/// `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `up`: the process answers.
    pub status: &'static str,
    /// Seconds since the node started.
    pub uptime_secs: u64,
}

/// Liveness: answers while the process serves HTTP, without asking the runtime (a busy runtime
/// is not a dead process).
async fn health(State(api): State<Api>) -> Json<Health> {
    Json(Health {
        status: "up",
        uptime_secs: now_ms().saturating_sub(api.info.started_ms) / 1000,
    })
}

/// `GET /ready` when ready.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// Always true (not ready is a 503 error).
    pub ready: bool,
    /// Height of the last final block.
    pub height: u64,
    /// Whether a peer is ahead of us.
    pub syncing: bool,
    /// Connected peers.
    pub peers: usize,
}

/// Readiness: caught up, voting if a validator, and connected unless alone in the set.
async fn ready(State(api): State<Api>) -> Result<Json<Ready>, ApiError> {
    query(&api, |rt| {
        let progress = *rt.progress().borrow();
        let engine = rt.engine();
        let ledger = engine.ledger();
        let set = ledger.validators();
        let alone = set.active_len() == 1;
        let validator = set.power(&engine.address()) > 0;
        let voting = !validator || alone || progress.signed_height >= ledger.height();
        let failing = if progress.syncing {
            Some("the node is syncing blocks from its peers".to_string())
        } else if !voting {
            Some(format!(
                "this validator last signed at height {}, behind the ledger at {}",
                progress.signed_height,
                ledger.height()
            ))
        } else if progress.peers == 0 && !alone {
            Some("no peer is connected".to_string())
        } else {
            None
        };
        match failing {
            Some(message) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                message,
            )),
            None => Ok(Json(Ready {
                ready: true,
                height: ledger.height(),
                syncing: progress.syncing,
                peers: progress.peers,
            })),
        }
    })
    .await
}

// ---- status ----

/// `GET /v1/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The chain id.
    pub chain_id: String,
    /// This node's public key (hex).
    pub node_key: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// The binary's version.
    pub version: &'static str,
    /// Height of the last final block.
    pub height: u64,
    /// Its hash.
    pub tip: String,
    /// Consensus round at the height being decided (null before it starts).
    pub round: Option<u32>,
    /// Whether a peer is ahead of us.
    pub syncing: bool,
    /// Highest height a peer reported.
    pub best_peer_height: u64,
    /// Connected peers.
    pub peers: usize,
    /// Whether this node has voting power.
    pub validator: bool,
    /// Height of the last vote or proposal this node signed (0: none).
    pub signed_height: u64,
    /// The packet filter.
    pub filter: FilterStatus,
    /// The mempool.
    pub mempool: MempoolStatus,
    /// When the node started, ms since the UNIX epoch.
    pub started_ms: u64,
}

/// The packet filter in [`Status`].
#[derive(Debug, Serialize)]
pub struct FilterStatus {
    /// `xdp_native`, `xdp_generic`, `userspace` or `off`.
    pub mode: &'static str,
    /// Interface the XDP program is attached to.
    pub iface: Option<String>,
    /// Its pinned instance.
    pub instance: Option<String>,
}

/// The mempool in [`Status`].
#[derive(Debug, Serialize)]
pub struct MempoolStatus {
    /// Pending transactions.
    pub transactions: usize,
    /// Their encoded size, bytes.
    pub bytes: usize,
}

async fn status(State(api): State<Api>) -> Result<Json<Status>, ApiError> {
    let info = api.info.clone();
    let filter = FilterStatus {
        mode: api.filter.mode().name(),
        iface: api.filter.iface().map(str::to_string),
        instance: api.filter.instance().map(|i| i.name().to_string()),
    };
    query(&api, move |rt| {
        let progress = *rt.progress().borrow();
        let best_peer_height = rt.stats().best_peer_height;
        let engine = rt.engine();
        let ledger = engine.ledger();
        Ok(Json(Status {
            chain_id: info.chain_id.clone(),
            node_key: info.key.clone(),
            peer_id: info.peer_id.clone(),
            version: info.version,
            height: ledger.height(),
            tip: ledger.tip_hash().to_string(),
            round: engine.round(),
            syncing: progress.syncing,
            best_peer_height,
            peers: progress.peers,
            validator: ledger.validators().power(&engine.address()) > 0,
            signed_height: progress.signed_height,
            filter,
            mempool: MempoolStatus {
                transactions: engine.mempool().len(),
                bytes: engine.mempool().bytes(),
            },
            started_ms: info.started_ms,
        }))
    })
    .await
}

// ---- blocks ----

/// A block.
#[derive(Debug, Serialize)]
pub struct BlockJson {
    /// Height (genesis is 0).
    pub height: u64,
    /// Its hash.
    pub hash: String,
    /// The parent's hash.
    pub parent: String,
    /// Proposer's clock at proposal, ms since the UNIX epoch.
    pub time_ms: u64,
    /// The proposer's key.
    pub proposer: String,
    /// Merkle root of its transactions.
    pub txs_root: String,
    /// State root after it.
    pub state_root: String,
    /// Hash of the validator set that voted on it.
    pub validators_hash: String,
    /// Its transactions, in order.
    pub transactions: Vec<TxJson>,
    /// Its commit certificate (null for genesis).
    pub commit: Option<CommitJson>,
}

/// A commit certificate in [`BlockJson`].
#[derive(Debug, Serialize)]
pub struct CommitJson {
    /// The round it was decided in.
    pub round: u32,
    /// Keys of the validators whose precommits it holds.
    pub signers: Vec<String>,
}

/// A transaction.
#[derive(Debug, Serialize)]
pub struct TxJson {
    /// Its id.
    pub hash: String,
    /// The sender's key.
    pub sender: String,
    /// The sender's nonce it uses.
    pub nonce: u64,
    /// Its fee.
    pub fee: u64,
    /// `transfer`, `bond`, `unbond` or `slash`.
    pub kind: &'static str,
    /// Recipient of a transfer.
    pub to: Option<String>,
    /// Amount of a transfer, bond or unbond.
    pub amount: Option<u64>,
}

impl TxJson {
    fn of(tx: &SignedTransaction) -> TxJson {
        let (to, amount) = match &tx.tx.payload {
            Payload::Transfer { to, amount } => (Some(to.to_string()), Some(*amount)),
            Payload::Bond { amount } | Payload::Unbond { amount } => (None, Some(*amount)),
            Payload::Slash(_) => (None, None),
        };
        TxJson {
            hash: tx.id().to_string(),
            sender: tx.tx.sender.to_string(),
            nonce: tx.tx.nonce,
            fee: tx.tx.fee,
            kind: tx.tx.payload.label(),
            to,
            amount,
        }
    }
}

/// A stored block and its commit certificate, read in the loop; the JSON (a hash per
/// transaction) is built outside it.
type Stored = (Block, Option<Commit>);

/// `block` with its commit certificate from the ledger.
fn with_commit(rt: &Rt, block: Block) -> Result<Stored, ApiError> {
    let commit = rt
        .engine()
        .ledger()
        .commit_at(block.header.height)
        .map_err(ApiError::internal)?;
    Ok((block, commit))
}

/// The JSON of a stored block with its commit.
fn block_json((block, commit): Stored) -> BlockJson {
    let commit = commit.map(|c| CommitJson {
        round: c.round,
        signers: c
            .signatures
            .iter()
            .map(|s| s.validator.to_string())
            .collect(),
    });
    let header = &block.header;
    BlockJson {
        height: header.height,
        hash: block.hash().to_string(),
        parent: header.parent.to_string(),
        time_ms: header.time_ms,
        proposer: header.proposer.to_string(),
        txs_root: header.txs_root.to_string(),
        state_root: header.state_root.to_string(),
        validators_hash: header.validators_hash.to_string(),
        transactions: block.txs.iter().map(TxJson::of).collect(),
        commit,
    }
}

/// The block at `height`, or `not_found`.
fn stored_block(rt: &Rt, height: u64) -> Result<Stored, ApiError> {
    let ledger = rt.engine().ledger();
    match ledger.block(height).map_err(ApiError::internal)? {
        Some(block) => with_commit(rt, block),
        None if height == 0 => Err(ApiError::not_found(
            "height 0 is genesis; blocks start at 1",
        )),
        None => Err(ApiError::not_found(format!(
            "no block at height {height}; the tip is at {}",
            ledger.height()
        ))),
    }
}

async fn latest_block(State(api): State<Api>) -> Result<Json<BlockJson>, ApiError> {
    let stored = query(&api, |rt| {
        let height = rt.engine().ledger().height();
        stored_block(rt, height)
    })
    .await?;
    Ok(Json(block_json(stored)))
}

async fn block_at(
    State(api): State<Api>,
    PathParam(height): PathParam,
) -> Result<Json<BlockJson>, ApiError> {
    let height: u64 = height.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_height",
            format!("`{height}` is not a height (a whole number)"),
        )
    })?;
    let stored = query(&api, move |rt| stored_block(rt, height)).await?;
    Ok(Json(block_json(stored)))
}

/// Parses a hash path parameter.
fn parse_hash(text: &str) -> Result<Hash, ApiError> {
    Hash::from_str(text).map_err(|_| {
        ApiError::bad_request(
            "invalid_hash",
            format!("`{text}` is not a hash (64 hex digits)"),
        )
    })
}

async fn block_by_hash(
    State(api): State<Api>,
    PathParam(hash): PathParam,
) -> Result<Json<BlockJson>, ApiError> {
    let hash = parse_hash(&hash)?;
    let stored = query(&api, move |rt| {
        let block = rt
            .engine()
            .ledger()
            .block_by_hash(&hash)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no block with hash {hash}")))?;
        with_commit(rt, block)
    })
    .await?;
    Ok(Json(block_json(stored)))
}

// ---- transactions ----

/// `POST /v1/transactions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTx {
    /// Hex of the canonical encoding of a signed transaction.
    pub tx: String,
}

/// `POST /v1/transactions` answer.
#[derive(Debug, Serialize)]
pub struct Submitted {
    /// The transaction id.
    pub hash: String,
    /// Always `pending`.
    pub status: &'static str,
}

/// Seconds a client is asked to wait when the mempool is full.
const MEMPOOL_FULL_RETRY_SECS: u64 = 2;

async fn submit_transaction(
    State(api): State<Api>,
    JsonBody(body): JsonBody<SubmitTx>,
) -> Result<Response, ApiError> {
    let bytes = hex::decode(body.tx.trim())
        .map_err(|e| ApiError::bad_request("invalid_hex", format!("`tx` is not hex: {e}")))?;
    let tx = SignedTransaction::from_bytes(&bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_transaction",
            format!("`tx` is not the canonical encoding of a signed transaction: {e}"),
        )
    })?;
    let hash = query(&api, move |rt| {
        match rt.engine_mut().on_transaction(tx.clone()) {
            Ok(hash) => {
                rt.broadcast_transaction(&tx);
                Ok(hash)
            }
            // Submitting again what is pending is not an error: the client may have lost
            // the first answer.
            Err(MempoolError::Duplicate { id }) => Ok(id),
            Err(MempoolError::State(e)) => Err(ApiError::internal(e)),
            Err(e @ MempoolError::Full { .. }) => Err(ApiError {
                retry_after: Some(MEMPOOL_FULL_RETRY_SECS),
                reason: Some(e.label()),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "mempool_full",
                    format!("{e}; pay a higher fee or retry later"),
                )
            }),
            Err(e) => Err(ApiError {
                reason: Some(e.label()),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "transaction_rejected",
                    format!("{}: {e}", e.label()),
                )
            }),
        }
    })
    .await?;
    let body = Submitted {
        hash: hash.to_string(),
        status: "pending",
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /v1/transactions/{hash}`.
#[derive(Debug, Serialize)]
pub struct TxStatus {
    /// The transaction id.
    pub hash: String,
    /// `pending` (in the mempool) or `committed`.
    pub status: &'static str,
    /// Height of its block, once committed.
    pub height: Option<u64>,
    /// Its index in the block, once committed.
    pub index: Option<u32>,
    /// The transaction.
    pub transaction: TxJson,
}

async fn transaction(
    State(api): State<Api>,
    PathParam(hash): PathParam,
) -> Result<Json<TxStatus>, ApiError> {
    let id = parse_hash(&hash)?;
    query(&api, move |rt| {
        let engine = rt.engine();
        let ledger = engine.ledger();
        if let Some(at) = ledger.tx_location(&id).map_err(ApiError::internal)? {
            let block = ledger
                .block(at.height)
                .map_err(ApiError::internal)?
                .ok_or_else(|| {
                    ApiError::internal(format!("indexed block {} is missing", at.height))
                })?;
            let tx = usize::try_from(at.index)
                .ok()
                .and_then(|i| block.txs.get(i))
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "transaction {id} is indexed at {}:{} but the block has {} transactions",
                        at.height,
                        at.index,
                        block.txs.len()
                    ))
                })?;
            return Ok(Json(TxStatus {
                hash: id.to_string(),
                status: "committed",
                height: Some(at.height),
                index: Some(at.index),
                transaction: TxJson::of(tx),
            }));
        }
        match engine.mempool().get(&id) {
            Some(tx) => Ok(Json(TxStatus {
                hash: id.to_string(),
                status: "pending",
                height: None,
                index: None,
                transaction: TxJson::of(tx),
            })),
            None => Err(ApiError::not_found(format!(
                "transaction {id} is neither pending nor committed"
            ))),
        }
    })
    .await
}

// ---- accounts ----

/// `GET /v1/accounts/{key}`.
#[derive(Debug, Serialize)]
pub struct AccountJson {
    /// The account's key.
    pub key: String,
    /// Its balance at `height`.
    pub balance: u64,
    /// Its next nonce at `height`.
    pub nonce: u64,
    /// The height the state was read at (the tip).
    pub height: u64,
    /// That height's state root, which `proof` proves the account against.
    pub state_root: String,
    /// Hex of the borsh encoding of the sparse Merkle proof (`chain::StateProof::proof`) of the
    /// account's record, or of its absence for an account never written.
    pub proof: String,
}

async fn account(
    State(api): State<Api>,
    PathParam(key): PathParam,
) -> Result<Json<AccountJson>, ApiError> {
    let key = PublicKey::from_str(&key).map_err(|e| {
        ApiError::bad_request("invalid_key", format!("`{key}` is not a public key: {e}"))
    })?;
    query(&api, move |rt| {
        let ledger = rt.engine().ledger();
        let proven = ledger.prove_account(&key).map_err(ApiError::internal)?;
        let account = match &proven.value {
            Some(bytes) => Account::from_bytes(bytes).map_err(ApiError::internal)?,
            None => Account::default(),
        };
        let proof = borsh::to_vec(&proven.proof).map_err(ApiError::internal)?;
        Ok(Json(AccountJson {
            key: key.to_string(),
            balance: account.balance,
            nonce: account.nonce,
            height: ledger.height(),
            state_root: ledger.tip().state_root.to_string(),
            proof: hex::encode(proof),
        }))
    })
    .await
}

// ---- validators and peers ----

/// `GET /v1/validators`.
#[derive(Debug, Serialize)]
pub struct Validators {
    /// The height whose state the set was read at; it votes on the next block.
    pub height: u64,
    /// Sum of the stakes.
    pub total_stake: u64,
    /// Validators with voting power, ascending by key.
    pub validators: Vec<ValidatorJson>,
}

/// One validator in [`Validators`].
#[derive(Debug, Serialize)]
pub struct ValidatorJson {
    /// Its key.
    pub key: String,
    /// Its stake (voting power).
    pub stake: u64,
}

async fn validators(State(api): State<Api>) -> Result<Json<Validators>, ApiError> {
    query(&api, |rt| {
        let ledger = rt.engine().ledger();
        let set = ledger.validators();
        Ok(Json(Validators {
            height: ledger.height(),
            total_stake: set.total_power(),
            validators: set
                .active()
                .map(|v| ValidatorJson {
                    key: v.key.to_string(),
                    stake: v.stake,
                })
                .collect(),
        }))
    })
    .await
}

/// `GET /v1/peers`.
#[derive(Debug, Serialize)]
pub struct Peers {
    /// Open connections (a peer with two connections appears twice).
    pub peers: Vec<PeerJson>,
}

/// One connection in [`Peers`].
#[derive(Debug, Serialize)]
pub struct PeerJson {
    /// The peer's id.
    pub peer_id: String,
    /// Its address on this connection.
    pub address: String,
    /// `inbound` (it dialled us) or `outbound`.
    pub direction: &'static str,
    /// Its score in the peer manager (0 is neutral, negative is misbehaving).
    pub score: f64,
}

async fn peers(State(api): State<Api>) -> Result<Json<Peers>, ApiError> {
    query(&api, |rt| {
        let now = now_ms();
        let network = rt.network();
        let peers = network
            .connections()
            .into_iter()
            .map(|c| PeerJson {
                peer_id: c.peer.to_string(),
                address: c.address.to_string(),
                direction: if c.inbound { "inbound" } else { "outbound" },
                score: network.peers().score(&c.peer, now),
            })
            .collect();
        Ok(Json(Peers { peers }))
    })
    .await
}

/// Bans listed by `GET /v1/bans`, at most: a screenful for the status page, and an answer of
/// bounded size however many bans are in force (under 350 KB: a ban holds at most 64 addresses
/// and 256 bytes of detail).
pub const MAX_LISTED_BANS: usize = 100;

/// `GET /v1/bans`: what the admin API's `GET /v1/admin/peers/bans` lists, bounded.
#[derive(Debug, Serialize)]
pub struct ActiveBans {
    /// The first [`MAX_LISTED_BANS`] bans in force, the first to expire first.
    bans: Vec<BanView>,
    /// Bans in force, listed or not.
    pub total: usize,
    /// Whether some were left out.
    pub truncated: bool,
}

async fn bans(State(api): State<Api>) -> Result<Json<ActiveBans>, ApiError> {
    query(&api, |rt| {
        let (first, total) = rt.network().peers().bans_first(now_ms(), MAX_LISTED_BANS);
        Ok(Json(ActiveBans {
            truncated: total > first.len(),
            bans: first.iter().map(BanView::from).collect(),
            total,
        }))
    })
    .await
}

// ---- documents ----

/// Prometheus text; the families are gathered in [`crate::collect`].
async fn metrics(State(api): State<Api>) -> Result<Response, ApiError> {
    let text = crate::collect::render(&api).await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// (method, path) of every operation in the OpenAPI document.
    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let paths = doc["paths"].as_object().expect("openapi.json has paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("a path item is an object")
                    .keys()
                    .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn every_served_route_is_documented_and_every_documented_route_is_served() {
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .chain(super::super::ws::ROUTES)
            .chain(super::super::status_page::ROUTES)
            .chain(super::super::admin::ROUTES)
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let documented = documented();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not in openapi.json: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "in openapi.json but not served: {unserved:?}"
        );
    }

    #[test]
    fn every_error_code_the_public_api_uses_is_in_the_documented_enum() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let codes: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
            ["properties"]["code"]["enum"]
            .as_array()
            .expect("the error code is an enum")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        for code in [
            "not_ready",
            "invalid_height",
            "invalid_hash",
            "invalid_key",
            "not_found",
            "invalid_hex",
            "malformed_transaction",
            "transaction_rejected",
            "invalid_json",
            "unsupported_media_type",
            "body_too_large",
            "method_not_allowed",
            "rate_limited",
            "too_many_streams",
            "websocket_required",
            "busy",
            "shutting_down",
            "internal",
        ] {
            assert!(
                codes.contains(code),
                "`{code}` is missing from the error code enum"
            );
        }
    }
}

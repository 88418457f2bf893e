//! The admin API: operator blocks, allows and bans, the kernel filter's mode, why an address is
//! treated as it is, and database checkpoints, behind a bearer token read from a file only its
//! owner can read.
//!
//! # Design
//! - Every block and ban goes through the network's peer manager
//!   ([`p2p::Network::ban`]), whatever the filter mode: it is persisted, refused by libp2p before
//!   the handshake, and written into the kernel blocklist by the network when XDP is attached.
//!   Unblocking also removes the kernel entry, since the network leaves operator entries alone.
//! - Kernel maps are read and written on the blocking pool: a listing walks maps that can hold
//!   millions of entries.
//! - The token is compared in time that depends on the token's length only.
//! - A database checkpoint is made on the blocking pool while the node keeps running: RocksDB
//!   flushes and hard-links its files, so the loop never waits for it. One is made at a time
//!   (a request during another is answered 409 `checkpoint_in_progress` rather than left to
//!   wait on a blocking-pool thread), each gets a name no earlier one had, and the checkpoints
//!   kept are bounded ([`MAX_CHECKPOINTS`]): each pins files the live database has since
//!   compacted away, so the backup tooling removes one once archived.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, TryLockError};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use firewall::clock::now_ns;
use firewall::rules::{ban_reason_name, parse_net};
use firewall::{FirewallError, Maps, Mode, Rule, RuleKind, Why};
use ipnet::IpNet;
use p2p::clock::now_ms;
use p2p::peers::{Ban, BanTarget, Explanation, MAX_ALLOWLIST};
use p2p::{BanReason, PeerId};
use serde::{Deserialize, Serialize};
use storage::RocksStore;

use super::error::{JsonBody, PathParam};
use super::{Api, ApiError};
use crate::secret::{self, SecretFileError};

/// Fewest characters of an admin token.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Random bytes of a generated token (64 hex digits).
pub const TOKEN_BYTES: usize = 32;
/// Longest operator block or ban, seconds (one year).
pub const MAX_TTL_SECS: u64 = 365 * 24 * 60 * 60;
/// Kernel rules listed by `GET /v1/admin/firewall`; `rules_truncated` says when there are more.
pub const MAX_LISTED_RULES: usize = 10_000;
/// Longest address, CIDR or peer id read from a request, characters.
const MAX_INPUT_CHARS: usize = 128;
/// The detail of every ban made through this API.
const OPERATOR_DETAIL: &str = "operator via admin API";
/// Most checkpoint directories under `<data_dir>/checkpoints/`; another one is refused until
/// one is removed. Each keeps alive the database files compacted away since it was made, so
/// an unbounded number would fill the disk.
pub const MAX_CHECKPOINTS: usize = 8;
/// The directory under the data directory that holds database checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Most names of stray directories (not `<height>-<created_ms>`) one warning lists; the rest
/// are counted.
const MAX_LOGGED_STRAYS: usize = 8;

/// Every admin route: method and path as written in the router.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/admin/firewall"),
    ("GET", "/v1/admin/firewall/why/{addr}"),
    ("POST", "/v1/admin/firewall/block"),
    ("POST", "/v1/admin/firewall/unblock"),
    ("POST", "/v1/admin/firewall/allow"),
    ("PUT", "/v1/admin/firewall/mode"),
    ("GET", "/v1/admin/peers/bans"),
    ("POST", "/v1/admin/peers/ban"),
    ("POST", "/v1/admin/peers/unban"),
    ("POST", "/v1/admin/db/checkpoint"),
];

/// The admin routes (state attached by [`Api::admin_router`], which also puts them behind
/// [`authorize`]).
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/admin/firewall", get(firewall))
        .route("/v1/admin/firewall/why/{addr}", get(why))
        .route("/v1/admin/firewall/block", post(block))
        .route("/v1/admin/firewall/unblock", post(unblock))
        .route("/v1/admin/firewall/allow", post(allow))
        .route("/v1/admin/firewall/mode", put(mode))
        .route("/v1/admin/peers/bans", get(bans))
        .route("/v1/admin/peers/ban", post(ban_peer))
        .route("/v1/admin/peers/unban", post(unban_peer))
        .route("/v1/admin/db/checkpoint", post(db_checkpoint))
}

/// Why a token file was refused, or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file itself was refused or could not be read or written.
    #[error("admin token file: {0}")]
    File(#[from] SecretFileError),
    /// The token is shorter than [`MIN_TOKEN_CHARS`].
    #[error(
        "the admin token in {path} has {len} characters; at least {MIN_TOKEN_CHARS} are needed"
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Characters found (surrounding whitespace removed).
        len: usize,
    },
    /// The token holds a character that cannot travel in an HTTP header.
    #[error("the admin token in {path} may hold only printable ASCII characters without spaces")]
    InvalidCharacters {
        /// The file.
        path: PathBuf,
    },
}

/// The admin API's bearer token. Its `Debug` output hides it.
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the token from `path`: a regular file no one but its owner may access, holding at
    /// least [`MIN_TOKEN_CHARS`] printable ASCII characters (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<Token, TokenError> {
        let text = secret::read(path)?;
        if !text.iter().all(u8::is_ascii_graphic) {
            return Err(TokenError::InvalidCharacters {
                path: path.to_path_buf(),
            });
        }
        if text.len() < MIN_TOKEN_CHARS {
            return Err(TokenError::TooShort {
                path: path.to_path_buf(),
                len: text.len(),
            });
        }
        // Printable ASCII only, checked above.
        Ok(Token(text.iter().map(|&b| char::from(b)).collect()))
    }

    /// A new token: [`TOKEN_BYTES`] bytes from the thread's CSPRNG (seeded by the OS), as 64
    /// lowercase hex digits.
    pub fn generate() -> Token {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::Rng::fill(&mut rand::rng(), &mut bytes);
        Token(hex::encode(bytes))
    }

    /// Generates a token and writes it to a new file at `path` with mode 0600; refuses to
    /// replace an existing file.
    pub fn write_new(path: &Path) -> Result<Token, TokenError> {
        let token = Token::generate();
        secret::write_new(path, format!("{}\n", token.0).as_bytes())?;
        Ok(token)
    }

    /// Whether `candidate` is the token, in time that depends only on the token's length.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        let mut diff = secret.len() ^ candidate.len();
        for (i, s) in secret.iter().enumerate() {
            let c = candidate.get(i).copied().unwrap_or(0);
            diff |= usize::from(s ^ c);
        }
        std::hint::black_box(diff) == 0
    }
}

/// Lets a request through only with `Authorization: Bearer <token>`; otherwise 401
/// `missing_token` (absent, or another scheme) or `invalid_token` (wrong), with
/// `WWW-Authenticate`.
pub async fn authorize(State(token): State<Arc<Token>>, request: Request, next: Next) -> Response {
    match check(&token, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Why a request was not authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No bearer credentials.
    Missing,
    /// Bearer credentials that are not the token.
    Invalid,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (code, message, challenge) = match self {
            Refusal::Missing => (
                "missing_token",
                "send the admin token as `Authorization: Bearer <token>` (it is in the node's admin.token file)",
                "Bearer",
            ),
            Refusal::Invalid => (
                "invalid_token",
                "the bearer token is not this node's admin token",
                "Bearer error=\"invalid_token\"",
            ),
        };
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// Checks the `Authorization` header against the token (the scheme is case-insensitive).
fn check(token: &Token, headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Refusal::Missing)?
        .as_bytes()
        .trim_ascii();
    let (scheme, credentials) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|space| value.split_at(space))
        .ok_or(Refusal::Missing)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Refusal::Missing);
    }
    if token.matches(credentials.trim_ascii()) {
        Ok(())
    } else {
        Err(Refusal::Invalid)
    }
}

/// A ban as the API shows it (here and in the public `GET /v1/bans`).
#[derive(Debug, Serialize)]
pub(super) struct BanView {
    target: String,
    addresses: Vec<String>,
    reason: &'static str,
    source: &'static str,
    since_ms: u64,
    until_ms: u64,
    offence: u32,
    detail: String,
}

impl From<&Ban> for BanView {
    fn from(ban: &Ban) -> BanView {
        BanView {
            target: ban.target.to_string(),
            addresses: ban.addresses.iter().map(IpNet::to_string).collect(),
            reason: ban.reason.name(),
            source: ban.source.name(),
            since_ms: ban.since_ms,
            until_ms: ban.until_ms,
            offence: ban.offence,
            detail: ban.detail.clone(),
        }
    }
}

/// One kernel rule.
#[derive(Debug, Serialize)]
struct RuleView {
    kind: &'static str,
    net: String,
    reason: Option<String>,
    expires_in_secs: Option<u64>,
}

/// Seconds until a kernel deadline (rounded up; 0 once passed), or `None` for no deadline.
fn expires_in_secs(expires_at_ns: u64, now_ns: u64) -> Option<u64> {
    const NS_PER_SEC: u64 = 1_000_000_000;
    (expires_at_ns != 0).then(|| expires_at_ns.saturating_sub(now_ns).div_ceil(NS_PER_SEC))
}

impl RuleView {
    fn new(rule: &Rule, now_ns: u64) -> RuleView {
        match rule.kind {
            RuleKind::Allow(_) => RuleView {
                kind: "allow",
                net: rule.net.to_string(),
                reason: None,
                expires_in_secs: None,
            },
            RuleKind::Block(entry) => RuleView {
                kind: "block",
                net: rule.net.to_string(),
                reason: Some(ban_reason_name(entry.reason)),
                expires_in_secs: expires_in_secs(entry.expires_at_ns, now_ns),
            },
        }
    }
}

/// `GET /v1/admin/firewall`.
#[derive(Debug, Serialize)]
struct FirewallView {
    mode: &'static str,
    enforcement: Option<&'static str>,
    iface: Option<String>,
    instance: Option<String>,
    rules: Vec<RuleView>,
    rules_truncated: bool,
    bans: Vec<BanView>,
    allowlist: Vec<String>,
}

fn enforcement_name(config: &firewall_common::Config) -> &'static str {
    if config.is_monitor() {
        "monitor"
    } else {
        "enforce"
    }
}

/// Runs `f` on the kernel maps on the blocking pool; `None` when no XDP filter is attached.
async fn with_maps<T, F>(api: &Api, f: F) -> Result<Option<T>, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Maps) -> Result<T, FirewallError> + Send + 'static,
{
    let filter = Arc::clone(&api.filter);
    tokio::task::spawn_blocking(move || match filter.maps() {
        Some(mut maps) => f(&mut maps).map(Some),
        None => Ok(None),
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

async fn firewall(State(api): State<Api>) -> Result<Json<FirewallView>, ApiError> {
    let (bans, allowlist) = api
        .handle
        .call(|rt| {
            let peers = rt.network().peers();
            let bans: Vec<BanView> = peers.bans(now_ms()).iter().map(BanView::from).collect();
            let allowlist: Vec<String> = peers.allowlist().iter().map(IpNet::to_string).collect();
            (bans, allowlist)
        })
        .await?;
    let kernel = with_maps(&api, |maps| {
        let now = now_ns();
        let rules = maps.list()?;
        let truncated = rules.len() > MAX_LISTED_RULES;
        let views = rules
            .iter()
            .take(MAX_LISTED_RULES)
            .map(|rule| RuleView::new(rule, now))
            .collect::<Vec<_>>();
        Ok((enforcement_name(&maps.config()?), views, truncated))
    })
    .await?;
    let (enforcement, rules, rules_truncated) = match kernel {
        Some((enforcement, rules, truncated)) => (Some(enforcement), rules, truncated),
        None => (None, Vec::new(), false),
    };
    Ok(Json(FirewallView {
        mode: api.filter.mode().name(),
        enforcement,
        iface: api.filter.iface().map(str::to_string),
        instance: api.filter.instance().map(|i| i.name().to_string()),
        rules,
        rules_truncated,
        bans,
        allowlist,
    }))
}

/// The kernel's rules for one address.
#[derive(Debug, Serialize)]
struct KernelWhyView {
    allow: Option<String>,
    block: Option<KernelBlockView>,
}

#[derive(Debug, Serialize)]
struct KernelBlockView {
    net: String,
    reason: String,
    expires_in_secs: Option<u64>,
}

impl KernelWhyView {
    /// The allow rule, and the unexpired block that applies to the address when the allow rule
    /// is left aside (so a block hidden by an allow is still shown).
    fn new(why: &Why) -> KernelWhyView {
        let block = Why {
            allow: None,
            ..why.clone()
        }
        .deciding_block()
        .map(|(net, entry)| KernelBlockView {
            net: net.to_string(),
            reason: ban_reason_name(entry.reason),
            expires_in_secs: expires_in_secs(entry.expires_at_ns, why.now_ns),
        });
        KernelWhyView {
            allow: why.allow.map(|net| net.to_string()),
            block,
        }
    }
}

/// What the peer manager knows of one address.
#[derive(Debug, Serialize)]
struct PeersWhyView {
    score: f64,
    allowlisted: bool,
    offences: u32,
    reports: Vec<ReportView>,
    bans: Vec<BanView>,
}

#[derive(Debug, Serialize)]
struct ReportView {
    source: &'static str,
    reason: &'static str,
    count: u32,
}

impl From<&Explanation> for PeersWhyView {
    fn from(e: &Explanation) -> PeersWhyView {
        PeersWhyView {
            score: e.score,
            allowlisted: e.allowlisted,
            offences: e.offences,
            reports: e
                .reports
                .iter()
                .map(|(&(source, reason), &count)| ReportView {
                    source,
                    reason,
                    count,
                })
                .collect(),
            bans: e.bans.iter().map(BanView::from).collect(),
        }
    }
}

/// `GET /v1/admin/firewall/why/{addr}`.
#[derive(Debug, Serialize)]
struct WhyView {
    address: String,
    decision: &'static str,
    kernel: Option<KernelWhyView>,
    peers: Option<PeersWhyView>,
}

async fn why(
    State(api): State<Api>,
    PathParam(addr): PathParam,
) -> Result<Json<WhyView>, ApiError> {
    let ip = bounded(&addr, "invalid_address", "address")?
        .parse::<IpAddr>()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_address",
                format!("{addr:?} is not an IPv4 or IPv6 address"),
            )
        })?
        .to_canonical();
    let peers = api
        .handle
        .call(move |rt| {
            rt.network()
                .peers()
                .explain_addr(ip, now_ms())
                .as_ref()
                .map(PeersWhyView::from)
        })
        .await?;
    let kernel = with_maps(&api, move |maps| maps.why(ip))
        .await?
        .map(|why| KernelWhyView::new(&why));
    let allowed = kernel.as_ref().is_some_and(|k| k.allow.is_some())
        || peers.as_ref().is_some_and(|p| p.allowlisted);
    let blocked = kernel.as_ref().is_some_and(|k| k.block.is_some())
        || peers.as_ref().is_some_and(|p| !p.bans.is_empty());
    let decision = if allowed {
        "allowed"
    } else if blocked {
        "blocked"
    } else {
        "none"
    };
    Ok(Json(WhyView {
        address: ip.to_string(),
        decision,
        kernel,
        peers,
    }))
}

/// Refuses an input longer than [`MAX_INPUT_CHARS`] with `code`.
fn bounded<'a>(input: &'a str, code: &'static str, what: &str) -> Result<&'a str, ApiError> {
    if input.len() > MAX_INPUT_CHARS {
        return Err(ApiError::bad_request(
            code,
            format!("the {what} is longer than {MAX_INPUT_CHARS} characters"),
        ));
    }
    Ok(input)
}

fn net_of(input: &str) -> Result<IpNet, ApiError> {
    parse_net(bounded(input, "invalid_net", "net")?)
        .map_err(|e| ApiError::bad_request("invalid_net", e.to_string()))
}

fn peer_of(input: &str) -> Result<PeerId, ApiError> {
    bounded(input, "invalid_peer_id", "peer id")?
        .parse()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_peer_id",
                format!("{input:?} is not a libp2p peer id (base58, like 12D3KooW...)"),
            )
        })
}

/// A TTL in seconds as milliseconds, `None` for the configured ban duration.
fn ttl_ms_of(ttl_secs: Option<u64>) -> Result<Option<u64>, ApiError> {
    match ttl_secs {
        None => Ok(None),
        Some(secs @ 1..=MAX_TTL_SECS) => Ok(Some(secs * 1000)),
        Some(secs) => Err(ApiError::bad_request(
            "invalid_ttl",
            format!("ttl_secs {secs} must be between 1 and {MAX_TTL_SECS}"),
        )),
    }
}

/// Bans `target` as the operator; 409 `allowlisted` when the peer manager spares it.
async fn operator_ban(
    api: &Api,
    target: BanTarget,
    ttl_ms: Option<u64>,
) -> Result<BanView, ApiError> {
    let ban = api
        .handle
        .call(move |rt| {
            rt.network()
                .ban(target, BanReason::Manual, ttl_ms, OPERATOR_DETAIL)
                .map(|ban| ban.as_ref().map(BanView::from))
                .map_err(ApiError::internal)
        })
        .await??;
    ban.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "allowlisted",
            format!("{target} is allowlisted and cannot be banned"),
        )
    })
}

/// `{"ban": Ban}`.
#[derive(Debug, Serialize)]
struct BanAnswer {
    ban: BanView,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    net: String,
    ttl_secs: Option<u64>,
}

async fn block(
    State(api): State<Api>,
    JsonBody(body): JsonBody<BlockBody>,
) -> Result<Json<BanAnswer>, ApiError> {
    let net = net_of(&body.net)?;
    let ttl_ms = ttl_ms_of(body.ttl_secs)?;
    let ban = operator_ban(&api, BanTarget::Address(net), ttl_ms).await?;
    Ok(Json(BanAnswer { ban }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetBody {
    net: String,
}

#[derive(Debug, Serialize)]
struct UnblockAnswer {
    net: String,
    removed: bool,
}

async fn unblock(
    State(api): State<Api>,
    JsonBody(body): JsonBody<NetBody>,
) -> Result<Json<UnblockAnswer>, ApiError> {
    let net = net_of(&body.net)?;
    let unbanned = api
        .handle
        .call(move |rt| {
            rt.network()
                .unban(&BanTarget::Address(net))
                .map_err(ApiError::internal)
        })
        .await??;
    let unblocked = with_maps(&api, move |maps| maps.unblock(net)).await?;
    Ok(Json(UnblockAnswer {
        net: net.to_string(),
        removed: unbanned || unblocked == Some(true),
    }))
}

#[derive(Debug, Serialize)]
struct AllowAnswer {
    net: String,
    added: bool,
}

async fn allow(
    State(api): State<Api>,
    JsonBody(body): JsonBody<NetBody>,
) -> Result<Json<AllowAnswer>, ApiError> {
    let net = net_of(&body.net)?;
    let added = api
        .handle
        .call(move |rt| {
            let network = rt.network();
            let allowlist = network.peers().allowlist();
            if allowlist.contains(&net) {
                return Ok(false);
            }
            if allowlist.len() >= MAX_ALLOWLIST {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "allowlist_full",
                    format!("the allowlist holds its maximum of {MAX_ALLOWLIST} nets"),
                ));
            }
            Ok(network.allow(net))
        })
        .await??;
    Ok(Json(AllowAnswer {
        net: net.to_string(),
        added,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: String,
}

#[derive(Debug, Serialize)]
struct ModeAnswer {
    enforcement: &'static str,
}

async fn mode(
    State(api): State<Api>,
    JsonBody(body): JsonBody<ModeBody>,
) -> Result<Json<ModeAnswer>, ApiError> {
    let wanted = match body.mode.as_str() {
        "enforce" => Mode::Enforce,
        "monitor" => Mode::Monitor,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_mode",
                "mode must be \"enforce\" or \"monitor\"",
            ));
        }
    };
    let config = with_maps(&api, move |maps| {
        maps.set_mode(wanted)?;
        maps.config()
    })
    .await?
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_kernel_filter",
            format!(
                "the node runs without the XDP filter (mode {}): there is no kernel mode to switch",
                api.filter.mode().name()
            ),
        )
    })?;
    Ok(Json(ModeAnswer {
        enforcement: enforcement_name(&config),
    }))
}

#[derive(Debug, Serialize)]
struct BansAnswer {
    bans: Vec<BanView>,
}

async fn bans(State(api): State<Api>) -> Result<Json<BansAnswer>, ApiError> {
    let bans = api
        .handle
        .call(|rt| {
            rt.network()
                .peers()
                .bans(now_ms())
                .iter()
                .map(BanView::from)
                .collect()
        })
        .await?;
    Ok(Json(BansAnswer { bans }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerBanBody {
    peer: String,
    ttl_secs: Option<u64>,
}

async fn ban_peer(
    State(api): State<Api>,
    JsonBody(body): JsonBody<PeerBanBody>,
) -> Result<Json<BanAnswer>, ApiError> {
    let peer = peer_of(&body.peer)?;
    let ttl_ms = ttl_ms_of(body.ttl_secs)?;
    let ban = operator_ban(&api, BanTarget::Peer(peer), ttl_ms).await?;
    Ok(Json(BanAnswer { ban }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerBody {
    peer: String,
}

#[derive(Debug, Serialize)]
struct UnbanAnswer {
    peer: String,
    removed: bool,
}

async fn unban_peer(
    State(api): State<Api>,
    JsonBody(body): JsonBody<PeerBody>,
) -> Result<Json<UnbanAnswer>, ApiError> {
    let peer = peer_of(&body.peer)?;
    let target = BanTarget::Peer(peer);
    let (removed, freed) = api
        .handle
        .call(move |rt| {
            let now = now_ms();
            let network = rt.network();
            let listed: Vec<IpNet> = network
                .peers()
                .bans(now)
                .into_iter()
                .filter(|ban| ban.target == target)
                .flat_map(|ban| ban.addresses)
                .collect();
            let removed = network.unban(&target).map_err(ApiError::internal)?;
            // The network never removes an operator's kernel entries by itself (they may have
            // been written with `node firewall block`); this ban was the operator's own.
            let peers = network.peers();
            let freed: Vec<IpNet> = listed
                .into_iter()
                .filter(|net| !peers.is_addr_banned(net.addr(), now))
                .collect();
            Ok::<_, ApiError>((removed, freed))
        })
        .await??;
    with_maps(&api, move |maps| {
        for net in freed {
            maps.unblock(net)?;
        }
        Ok(())
    })
    .await?;
    Ok(Json(UnbanAnswer {
        peer: peer.to_string(),
        removed,
    }))
}

/// The body of `POST /v1/admin/db/checkpoint`: nothing, or an empty JSON object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {}

/// A checkpoint made.
#[derive(Debug, Serialize)]
struct CheckpointView {
    /// Its directory, absolute.
    path: String,
    /// The final height when it was asked for: it holds every block up to this one.
    height: u64,
    /// When it was made, ms since the UNIX epoch.
    created_ms: u64,
}

/// Held while a checkpoint is made, so the bound on their number holds; it keeps the
/// `created_ms` of the last one made, so the next one's name differs even within the same ms.
static CHECKPOINT_LOCK: Mutex<u64> = Mutex::new(0);

async fn db_checkpoint(
    State(api): State<Api>,
    _body: Option<JsonBody<CheckpointBody>>,
) -> Result<(StatusCode, Json<CheckpointView>), ApiError> {
    let height = api.progress.borrow().height;
    let dir = api.info.data_dir.join(CHECKPOINTS_DIR);
    let db = api.db.clone();
    let view = tokio::task::spawn_blocking(move || {
        make_checkpoint(&CHECKPOINT_LOCK, db.as_deref(), &dir, height, now_ms)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Whether `name` is a checkpoint's, `<height>-<created_ms>` (two whole numbers).
fn is_checkpoint_name(name: &str) -> bool {
    let number = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && part.parse::<u64>().is_ok()
    };
    name.split_once('-')
        .is_some_and(|(height, created)| number(height) && number(created))
}

/// The checkpoint directories in `dir`, counted; directories of any other name (such as the
/// `*.tmp` a crashed RocksDB checkpoint leaves) do not count and are logged once, with what to
/// remove. Files are left alone.
fn count_checkpoints(dir: &Path) -> Result<usize, ApiError> {
    let listing_failed = |e: std::io::Error| {
        ApiError::internal(format!("listing the checkpoints in {}: {e}", dir.display()))
    };
    let mut kept = 0;
    let mut strays = Vec::new();
    let mut more_strays = 0usize;
    for entry in std::fs::read_dir(dir).map_err(listing_failed)? {
        let entry = entry.map_err(listing_failed)?;
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        if name.to_str().is_some_and(is_checkpoint_name) {
            kept += 1;
        } else if strays.len() < MAX_LOGGED_STRAYS {
            strays.push(name.to_string_lossy().into_owned());
        } else {
            more_strays += 1;
        }
    }
    if !strays.is_empty() {
        let more = if more_strays > 0 {
            format!(" and {more_strays} more")
        } else {
            String::new()
        };
        log::warn!(
            "{} holds directories that are not checkpoints (named <height>-<created_ms>) and are not counted: {}{more}; remove them (rm -r) unless you put them there: a `*.tmp` one is left by a checkpoint that did not finish and keeps database files alive",
            dir.display(),
            strays.join(", ")
        );
    }
    Ok(kept)
}

/// Makes `<dir>/<height>-<created_ms>` a checkpoint of `db`, unless [`MAX_CHECKPOINTS`]
/// checkpoints are there already or another is being made (`lock` is held: 409
/// `checkpoint_in_progress`). `height` is the final height read before: the checkpoint holds
/// at least that. `created_ms` is read from `now_ms` once the lock is held, and made one more
/// than the last one's if the clock did not move past it, so every name is new.
fn make_checkpoint(
    lock: &Mutex<u64>,
    db: Option<&RocksStore>,
    dir: &Path,
    height: u64,
    now_ms: impl FnOnce() -> u64,
) -> Result<CheckpointView, ApiError> {
    let db = db.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_database",
            "this node runs without an on-disk database: there is nothing to checkpoint",
        )
    })?;
    let mut last_created_ms = match lock.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "checkpoint_in_progress",
                "another checkpoint is being made: ask again once it is answered",
            ));
        }
    };
    secret::private_dir(dir).map_err(ApiError::internal)?;
    if count_checkpoints(dir)? >= MAX_CHECKPOINTS {
        log::warn!(
            "database checkpoint refused: {} already holds {MAX_CHECKPOINTS} checkpoints",
            dir.display()
        );
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_checkpoints",
            format!(
                "{} holds {MAX_CHECKPOINTS} checkpoints, the most kept: archive and remove old ones first",
                dir.display()
            ),
        ));
    }
    let created_ms = now_ms().max(last_created_ms.saturating_add(1));
    let path = dir.join(format!("{height}-{created_ms}"));
    db.checkpoint(&path).map_err(ApiError::internal)?;
    *last_created_ms = created_ms;
    log::info!(
        "database checkpoint made in {} (height {height})",
        path.display()
    );
    Ok(CheckpointView {
        path: path.display().to_string(),
        height,
        created_ms,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_mode(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn generated_tokens_are_64_distinct_hex_digits() {
        let (a, b) = (Token::generate(), Token::generate());
        for t in [&a, &b] {
            assert_eq!(t.0.len(), 2 * TOKEN_BYTES);
            assert!(t.0.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        }
        assert_ne!(a.0, b.0);
    }

    #[test]
    fn a_written_token_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let written = Token::write_new(&path).unwrap();
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&path).unwrap()) & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Token::load(&path).unwrap();
        assert_eq!(loaded.0, written.0);
        assert!(loaded.matches(written.0.as_bytes()));
    }

    #[test]
    fn tokens_shorter_than_32_characters_or_unprintable_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        write_mode(&path, &format!("  {}\n", "b".repeat(31)), 0o600);
        assert!(matches!(
            Token::load(&path),
            Err(TokenError::TooShort { len: 31, .. })
        ));
        write_mode(&path, &format!("{}\n", "b".repeat(32)), 0o600);
        assert_eq!(Token::load(&path).unwrap().0, "b".repeat(32));
        write_mode(
            &path,
            &format!("{} {}", "b".repeat(20), "c".repeat(20)),
            0o600,
        );
        assert!(matches!(
            Token::load(&path),
            Err(TokenError::InvalidCharacters { .. })
        ));
        write_mode(&path, &"a".repeat(64), 0o644);
        let err = Token::load(&path).unwrap_err();
        assert!(matches!(err, TokenError::File(_)), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = Token("s".repeat(40));
        assert!(token.matches("s".repeat(40).as_bytes()));
        for wrong in [
            "s".repeat(39),
            "s".repeat(41),
            format!("{}t", "s".repeat(39)),
            String::new(),
        ] {
            assert!(!token.matches(wrong.as_bytes()), "{wrong:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = Token::generate();
        assert!(!format!("{token:?}").contains(&token.0));
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(value) = authorization {
            map.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_bearer_credentials_with_the_token_are_authorized() {
        let secret = "x".repeat(64);
        let token = Token(secret.clone());
        assert_eq!(
            check(&token, &headers(Some(&format!("Bearer {secret}")))),
            Ok(())
        );
        assert_eq!(
            check(&token, &headers(Some(&format!("bearer  {secret} ")))),
            Ok(())
        );
        assert_eq!(check(&token, &headers(None)), Err(Refusal::Missing));
        assert_eq!(
            check(&token, &headers(Some("Bearer"))),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(&token, &headers(Some(&format!("Basic {secret}")))),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(&token, &headers(Some(&format!("Bearer {secret}y")))),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            check(&token, &headers(Some("Bearer "))),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn refusals_are_401_with_a_bearer_challenge() {
        for refusal in [Refusal::Missing, Refusal::Invalid] {
            let response = refusal.into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }

    #[test]
    fn ttls_are_bounded_and_kernel_expiry_rounds_up() {
        assert_eq!(ttl_ms_of(None).unwrap(), None);
        assert_eq!(ttl_ms_of(Some(600)).unwrap(), Some(600_000));
        for bad in [0, MAX_TTL_SECS + 1, u64::MAX] {
            assert_eq!(ttl_ms_of(Some(bad)).unwrap_err().code, "invalid_ttl");
        }
        assert_eq!(expires_in_secs(0, 5), None);
        assert_eq!(expires_in_secs(1_500_000_000, 0), Some(2));
        assert_eq!(expires_in_secs(5, 10), Some(0));
    }

    #[test]
    fn nets_and_peer_ids_are_validated_with_specific_codes() {
        assert_eq!(
            net_of("198.51.100.0/24").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(net_of("198.51.100.7/24").unwrap_err().code, "invalid_net");
        assert_eq!(net_of("nope").unwrap_err().code, "invalid_net");
        assert_eq!(net_of(&"1".repeat(500)).unwrap_err().code, "invalid_net");
        assert_eq!(
            peer_of("12D3-not-a-peer").unwrap_err().code,
            "invalid_peer_id"
        );
        let peer = PeerId::random();
        assert_eq!(peer_of(&peer.to_string()).unwrap(), peer);
    }

    fn store_with(key: &[u8]) -> (tempfile::TempDir, RocksStore) {
        use storage::{Column, Store, StoreOptions, WriteBatch};
        let dir = tempfile::tempdir().unwrap();
        let db = RocksStore::open(&dir.path().join("db"), &StoreOptions::test()).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(Column::Meta, key, b"v");
        db.write(batch).unwrap();
        (dir, db)
    }

    #[test]
    fn a_checkpoint_is_named_by_height_and_time_and_opens_with_the_data() {
        use storage::{Column, Store, StoreOptions};
        let (dir, db) = store_with(b"marker");
        let checkpoints = dir.path().join(CHECKPOINTS_DIR);
        let lock = Mutex::new(0);
        let view = make_checkpoint(&lock, Some(&db), &checkpoints, 7, || 1234).unwrap();
        let path = checkpoints.join("7-1234");
        assert_eq!(view.path, path.display().to_string());
        assert_eq!((view.height, view.created_ms), (7, 1234));
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&checkpoints).unwrap());
        assert_eq!(mode & 0o777, 0o700);
        let copy = RocksStore::open(&path, &StoreOptions::test()).unwrap();
        assert_eq!(
            copy.get(Column::Meta, b"marker").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn checkpoints_asked_for_in_the_same_millisecond_get_distinct_names() {
        let (dir, db) = store_with(b"marker");
        let checkpoints = dir.path().join(CHECKPOINTS_DIR);
        let lock = Mutex::new(0);
        let first = make_checkpoint(&lock, Some(&db), &checkpoints, 7, || 1234).unwrap();
        let second = make_checkpoint(&lock, Some(&db), &checkpoints, 7, || 1234).unwrap();
        // A clock stepped back does not reuse a name either.
        let third = make_checkpoint(&lock, Some(&db), &checkpoints, 7, || 1000).unwrap();
        assert_eq!(
            [first.created_ms, second.created_ms, third.created_ms],
            [1234, 1235, 1236]
        );
        for view in [first, second, third] {
            assert!(Path::new(&view.path).is_dir(), "{view:?}");
        }
    }

    #[test]
    fn a_checkpoint_asked_for_while_another_is_made_is_409_checkpoint_in_progress() {
        let (dir, db) = store_with(b"marker");
        let checkpoints = dir.path().join(CHECKPOINTS_DIR);
        let lock = Mutex::new(0);
        let making = lock.lock().unwrap();
        let busy = make_checkpoint(&lock, Some(&db), &checkpoints, 7, || 1234).unwrap_err();
        assert_eq!(
            (busy.status, busy.code),
            (StatusCode::CONFLICT, "checkpoint_in_progress")
        );
        assert!(!checkpoints.join("7-1234").exists());
        drop(making);
        make_checkpoint(&lock, Some(&db), &checkpoints, 7, || 1234).unwrap();
    }

    #[test]
    fn checkpoints_over_the_bound_are_refused_until_one_is_removed() {
        let (dir, db) = store_with(b"marker");
        let checkpoints = dir.path().join(CHECKPOINTS_DIR);
        let lock = Mutex::new(0);
        for i in 0..MAX_CHECKPOINTS as u64 {
            make_checkpoint(&lock, Some(&db), &checkpoints, i, || 1000 + i).unwrap();
        }
        // Files beside them are not checkpoints and do not count.
        std::fs::write(checkpoints.join("notes.txt"), "archived").unwrap();
        let refused = make_checkpoint(&lock, Some(&db), &checkpoints, 99, || 2000).unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::CONFLICT, "too_many_checkpoints")
        );
        assert!(refused.message.contains("remove old ones"), "{refused:?}");
        assert!(!checkpoints.join("99-2000").exists());
        std::fs::remove_dir_all(checkpoints.join("0-1000")).unwrap();
        make_checkpoint(&lock, Some(&db), &checkpoints, 99, || 2000).unwrap();
    }

    #[test]
    fn directories_not_named_as_checkpoints_do_not_take_a_slot() {
        let (dir, db) = store_with(b"marker");
        let checkpoints = dir.path().join(CHECKPOINTS_DIR);
        let lock = Mutex::new(0);
        for i in 1..MAX_CHECKPOINTS as u64 {
            make_checkpoint(&lock, Some(&db), &checkpoints, i, || 1000 + i).unwrap();
        }
        // What a crashed RocksDB checkpoint leaves, and other names that are not checkpoints.
        for stray in ["7-1234.tmp", "foo.tmp", "-5", "5-", "+5-6", "5-6-7"] {
            std::fs::create_dir(checkpoints.join(stray)).unwrap();
        }
        assert_eq!(
            count_checkpoints(&checkpoints).unwrap(),
            MAX_CHECKPOINTS - 1
        );
        make_checkpoint(&lock, Some(&db), &checkpoints, 99, || 2000).unwrap();
        assert_eq!(count_checkpoints(&checkpoints).unwrap(), MAX_CHECKPOINTS);
    }

    #[test]
    fn only_two_whole_numbers_joined_by_a_dash_name_a_checkpoint() {
        for name in ["0-0", "7-1234", "18446744073709551615-1"] {
            assert!(is_checkpoint_name(name), "{name}");
        }
        for name in [
            "7-1234.tmp",
            "foo.tmp",
            "7",
            "-5",
            "5-",
            "+5-6",
            "5-+6",
            "5-6-7",
            " 5-6",
            "18446744073709551616-1",
        ] {
            assert!(!is_checkpoint_name(name), "{name}");
        }
    }

    #[test]
    fn without_a_database_a_checkpoint_is_503_no_database() {
        let dir = tempfile::tempdir().unwrap();
        let err = make_checkpoint(&Mutex::new(0), None, dir.path(), 1, || 1).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::SERVICE_UNAVAILABLE, "no_database")
        );
    }

    #[test]
    fn the_checkpoint_error_codes_are_documented() {
        let doc: serde_json::Value = serde_json::from_str(super::super::public::OPENAPI).unwrap();
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
            ["enum"];
        for code in [
            "no_database",
            "too_many_checkpoints",
            "checkpoint_in_progress",
        ] {
            assert!(
                codes
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c.as_str() == Some(code)),
                "`{code}` is missing from the error code enum"
            );
        }
    }
}

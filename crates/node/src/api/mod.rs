//! The node's HTTP API (axum): the public read-only API with `/metrics`, the event stream and
//! the status page, and the admin API behind a bearer token.
//!
//! # Design
//! Handlers never touch the ledger or the network directly: they send a job to the runtime
//! through its [`Handle`] and await the answer, so every answer is consistent with one moment
//! of the node and nothing is locked. Every error is JSON `{"error": {"code", "message"}}` with a
//! stable `code` (listed in `docs/api/openapi.json`). Request bodies are bounded; each client
//! address of the public API has a token bucket. Both servers run on our own accept loop
//! ([`server`]), which bounds open connections in total and per client address, and the time a
//! client may take to send a request's headers.

pub mod admin;
pub mod error;
pub mod limit;
pub mod public;
pub mod server;
pub mod status_page;
pub mod ws;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use storage::{RocksStore, Store};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::config::ApiConfig;
use crate::events::Event;
use crate::filter::Filter;
use crate::runtime::{Handle, Progress};

pub use error::ApiError;
pub use server::ConnectionStats;

/// The store a node runs on.
pub type NodeStore = Arc<dyn Store>;

/// Facts about the node that do not change while it runs.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The chain id.
    pub chain_id: String,
    /// The node's public key (hex).
    pub key: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// The binary's version.
    pub version: &'static str,
    /// When the node started, ms since the UNIX epoch.
    pub started_ms: u64,
    /// The data directory, absolute (database checkpoints are made under it).
    pub data_dir: PathBuf,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct Api {
    /// Jobs into the runtime.
    pub handle: Handle<NodeStore>,
    /// The runtime's progress.
    pub progress: watch::Receiver<Progress>,
    /// The event stream.
    pub events: broadcast::Sender<Event>,
    /// The packet filter, whatever its mode.
    pub filter: Arc<Filter>,
    /// The kernel telemetry tracepoints, when attached.
    pub telemetry: Option<Arc<std::sync::Mutex<firewall::telemetry::Telemetry>>>,
    /// The database, for its sizes and checkpoints (none in tests on an in-memory store).
    pub db: Option<Arc<RocksStore>>,
    /// Static facts.
    pub info: Arc<NodeInfo>,
    /// Limits of the public API.
    pub config: ApiConfig,
    /// Per-client request budgets of the public API.
    pub limiter: Arc<limit::RateLimiter>,
    /// Open event streams, bounded by `config.max_streams`.
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections of the public and admin servers: open now, and refused over their bounds.
    pub connections: Arc<ConnectionStats>,
}

impl Api {
    /// The public API's routes, with body limit and per-client rate limit.
    pub fn public_router(&self) -> Router {
        public::routes()
            .merge(ws::routes())
            .merge(status_page::routes())
            .fallback(error::not_found)
            .method_not_allowed_fallback(error::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                limit::rate_limit,
            ))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(self.clone())
    }

    /// The admin API's routes, behind `token`.
    pub fn admin_router(&self, token: admin::Token) -> Router {
        admin::routes()
            .fallback(error::not_found)
            .method_not_allowed_fallback(error::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(token),
                admin::authorize,
            ))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(self.clone())
    }

    /// Serves `router` (either API) on `listener` until `shutdown` completes, within the
    /// connection limits of `config` and counted in `connections`; client addresses are passed
    /// to the handlers (the rate limiter keys on them). See [`server::serve`].
    pub fn serve(
        &self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        server::serve(
            listener,
            router,
            server::Limits::of(&self.config),
            self.connections.clone(),
            shutdown,
        )
    }
}

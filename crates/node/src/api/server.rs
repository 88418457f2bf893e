//! The API servers' accept loop: HTTP/1 connections (with WebSocket upgrades) under a bound on
//! open connections, in total and per client address, and a header read timeout.
//!
//! # Design
//! Each connection is counted from its accept until its socket closes, also after an upgrade to
//! a WebSocket (the count travels with the socket). A connection over a bound is closed as soon
//! as it is accepted, before anything is read from it, and counted as refused. Hyper closes a
//! connection whose client has not sent a request's headers within the header timeout, counted
//! from the connection's opening or from its previous answer: that bounds slow clients and idle
//! keep-alive connections alike. HTTP/2 is not served, so no connection escapes that timeout.
//!
//! On shutdown the listener is closed, idle connections close at once, and requests in flight
//! have [`SHUTDOWN_GRACE`] to finish before their connections are dropped.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use super::limit::client_key;
use crate::config::ApiConfig;

/// Longest wait at shutdown for requests in flight, after which their connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Pause after an accept error that is not about one connection (file descriptors exhausted,
/// say), so that the loop does not spin while it lasts.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// Bounds on a server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections, at most.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client: its /64), at most.
    pub max_per_ip: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
}

impl Limits {
    /// The limits of an API configuration.
    pub fn of(config: &ApiConfig) -> Limits {
        Limits {
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            header_timeout: Duration::from_millis(config.header_timeout_ms),
        }
    }
}

/// Connection counts of the API servers (public and admin together), for the metrics.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    refused: AtomicU64,
}

impl ConnectionStats {
    /// Connections open now, WebSocket streams included.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at accept since start, over the total or a client's bound.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One server's open connections, by client.
#[derive(Debug)]
struct Table {
    limits: Limits,
    stats: Arc<ConnectionStats>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl Table {
    fn new(limits: Limits, stats: Arc<ConnectionStats>) -> Arc<Table> {
        Arc::new(Table {
            limits,
            stats,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        match self.counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A slot for a connection from `ip`, or none (counted as refused) when a bound is reached.
    fn admit(self: &Arc<Table>, ip: IpAddr) -> Option<Slot> {
        let client = client_key(ip);
        let mut counts = self.counts();
        let of_client = counts.by_client.get(&client).copied().unwrap_or(0);
        if counts.total >= self.limits.max_connections || of_client >= self.limits.max_per_ip {
            drop(counts);
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        counts.total += 1;
        counts.by_client.insert(client, of_client + 1);
        drop(counts);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            table: self.clone(),
            client,
        })
    }
}

/// A connection's place in its [`Table`], given back when dropped.
#[derive(Debug)]
struct Slot {
    table: Arc<Table>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.table.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_client.remove(&self.client);
            }
        }
        drop(counts);
        self.table.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket with its slot: the slot is given back when the socket closes, also
/// when that is after an upgrade.
struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, counting into
/// `stats`; each request carries its client's address as [`ConnectInfo<SocketAddr>`]. Fails only
/// when the listener itself is unusable.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let table = Table::new(limits, stats);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (closing_tx, closing_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    log::error!("an API connection task failed: {e}");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Some(slot) = table.admit(remote.ip()) else {
                        log::debug!("API connection from {remote} refused: over its bound");
                        continue;
                    };
                    connections.spawn(connection(
                        http.clone(),
                        Counted { stream, _slot: slot },
                        remote,
                        router.clone(),
                        closing_rx.clone(),
                    ));
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) if is_of_one_connection(&e) => {}
                Err(e) => {
                    log::warn!("accepting an API connection failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    // Idle connections close now; the others when their request in flight is answered.
    closing_tx.send_replace(());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::warn!(
            "{} API connections still busy after {SHUTDOWN_GRACE:?}: closing them",
            connections.len()
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves one connection until it closes; on `closing`, finishes its request in flight and
/// closes it.
async fn connection(
    http: http1::Builder,
    socket: Counted,
    remote: SocketAddr,
    router: Router,
    mut closing: watch::Receiver<()>,
) {
    if let Err(e) = socket.stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY on the API connection from {remote}: {e}");
    }
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        router.clone().call(request)
    });
    let conn = http
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        // A closed channel means the server is gone: close as well.
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        log::debug!("API connection from {remote}: {e}");
    }
}

/// An accept error that leaves the listener unusable (accept(2) passes on pending network
/// errors of the new connection too, such as `EOPNOTSUPP` or `ENETDOWN`: those are not).
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK)
    )
}

/// An accept error about the one connection being accepted (gone before it was accepted).
fn is_of_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_connections: usize, max_per_ip: usize) -> Arc<Table> {
        let limits = Limits {
            max_connections,
            max_per_ip,
            header_timeout: Duration::from_secs(1),
        };
        Table::new(limits, Arc::new(ConnectionStats::default()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_bound_and_a_closed_connection_gives_its_slot_back() {
        let table = table(10, 2);
        let a = table.admit(ip("10.0.0.1")).unwrap();
        let _b = table.admit(ip("10.0.0.1")).unwrap();
        assert!(table.admit(ip("10.0.0.1")).is_none());
        let _other = table.admit(ip("10.0.0.2")).unwrap();
        assert_eq!((table.stats.open(), table.stats.refused()), (3, 1));
        drop(a);
        assert_eq!(table.stats.open(), 2);
        assert!(table.admit(ip("10.0.0.1")).is_some());
        assert_eq!(table.stats.open(), 2, "the slot was dropped at once");
    }

    #[test]
    fn the_total_is_bounded_and_the_table_forgets_clients_without_connections() {
        let table = table(2, 2);
        let a = table.admit(ip("10.0.0.1")).unwrap();
        let _b = table.admit(ip("10.0.0.2")).unwrap();
        assert!(table.admit(ip("10.0.0.3")).is_none());
        drop(a);
        assert_eq!(table.counts().by_client.len(), 1);
        let _c = table.admit(ip("10.0.0.3")).unwrap();
        assert_eq!((table.stats.open(), table.stats.refused()), (2, 1));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_client_its_address() {
        let table = table(10, 1);
        let _a = table.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(table.admit(ip("2001:db8:1:2:ffff::9")).is_none());
        let _other = table.admit(ip("2001:db8:1:3::1")).unwrap();
        let _v4 = table.admit(ip("10.0.0.1")).unwrap();
        assert!(table.admit(ip("::ffff:10.0.0.1")).is_none());
    }

    #[test]
    fn limits_come_from_the_api_configuration() {
        let limits = Limits::of(&ApiConfig::default());
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.max_per_ip, 64);
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_client_bound_above_the_total_is_refused() {
        let mut config = crate::config::Config::default();
        config.api.max_connections_per_ip = config.api.max_connections + 1;
        assert!(matches!(
            config.validate(),
            Err(crate::config::ConfigError::Field {
                field: "api.max_connections_per_ip",
                ..
            })
        ));
    }
}

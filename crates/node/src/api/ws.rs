//! The event stream: `GET /v1/events` upgrades to a WebSocket that carries every node event as
//! one JSON text message.
//!
//! # Design
//! Each stream subscribes to the node's broadcast channel. A subscriber that falls more than
//! [`crate::events::EVENT_BUFFER`] events behind is told how many it missed (`lagged`) and
//! continues from the oldest event still buffered. Open streams are bounded by
//! `api.max_streams`: a slot is taken before the upgrade and given back when the stream ends
//! however it ends (client close, send failure or timeout, failed upgrade). Pings are answered
//! by the WebSocket layer; messages from the client are read (and bounded) but ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use futures::SinkExt;
use tokio::sync::broadcast::error::RecvError;

use super::{Api, ApiError};
use crate::events::Event;

/// Method and path of every route [`routes`] serves.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/v1/events")];

/// Largest message a client may send on the stream, bytes; it has nothing to say but close.
const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024;

/// Longest wait for one event to be written to a client; a client that reads slower is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The event stream's route.
pub fn routes() -> Router<Api> {
    Router::new().route("/v1/events", get(events))
}

/// A slot among the open streams, given back on drop.
struct StreamSlot {
    open: Arc<AtomicUsize>,
}

impl StreamSlot {
    /// Takes a slot, unless `max` streams are open.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<StreamSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| StreamSlot { open: open.clone() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn events(
    State(api): State<Api>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "websocket_required",
            format!(
                "this endpoint is a WebSocket; connect with a WebSocket client ({})",
                rejection.body_text()
            ),
        )
    })?;
    let max = api.config.max_streams;
    let slot = StreamSlot::take(&api.streams, max).ok_or_else(|| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "too_many_streams",
        message: format!("{max} event streams are open, the most this node serves; retry later"),
        retry_after: Some(5),
        reason: None,
    })?;
    let receiver = api.events.subscribe();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| stream(socket, receiver, slot)))
}

/// Sends events until the client goes away or cannot keep up; `_slot` is held until then.
async fn stream(
    mut socket: WebSocket,
    mut receiver: tokio::sync::broadcast::Receiver<Event>,
    _slot: StreamSlot,
) {
    loop {
        tokio::select! {
            event = receiver.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => Event::Lagged { missed },
                    Err(RecvError::Closed) => {
                        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close()).await;
                        return;
                    }
                };
                if !send(&mut socket, &event).await {
                    return;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) => {
                    // Sends the close reply the WebSocket layer queued.
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close()).await;
                    return;
                }
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Writes one event; false when the stream should end.
async fn send(socket: &mut WebSocket, event: &Event) -> bool {
    let text = match serde_json::to_string(event) {
        Ok(text) => text,
        Err(e) => {
            log::error!("an event could not be serialized: {e}");
            return true;
        }
    };
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::text(text))).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_slots_are_bounded_and_given_back_on_drop() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = StreamSlot::take(&open, 2).expect("first slot");
        let b = StreamSlot::take(&open, 2).expect("second slot");
        assert!(StreamSlot::take(&open, 2).is_none());
        drop(a);
        assert_eq!(open.load(Ordering::Acquire), 1);
        let c = StreamSlot::take(&open, 2).expect("a slot given back is free again");
        drop((b, c));
        assert_eq!(open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_lagged_notice_serializes_with_its_type_and_count() {
        let text = serde_json::to_string(&Event::Lagged { missed: 7 }).unwrap();
        assert_eq!(text, r#"{"type":"lagged","missed":7}"#);
    }
}

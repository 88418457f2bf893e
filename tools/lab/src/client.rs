//! The lab's client of the nodes' public and admin APIs (from the hub namespace).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;

use crate::prom::{MAX_EXPOSITION_BYTES, Metrics};
use crate::topology::{ADMIN_PORT, API_PORT};

/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest JSON answer the lab reads, in bytes: a block of the largest size
/// ([`types::limits::MAX_BLOCK_BYTES`]) is twice as long in hex, with room for the rest.
const MAX_ANSWER_BYTES: usize = 4 * types::limits::MAX_BLOCK_BYTES;

/// One honest node's API endpoints.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://<ip>:8080`.
    pub api: String,
    /// `http://<ip>:8081`.
    pub admin: String,
    /// The admin bearer token.
    pub token: String,
}

impl Endpoint {
    /// The endpoints of the node at `ip`.
    pub fn new(ip: Ipv4Addr, token: String) -> Endpoint {
        Endpoint {
            api: format!("http://{ip}:{API_PORT}"),
            admin: format!("http://{ip}:{ADMIN_PORT}"),
            token,
        }
    }

    /// `ws://<ip>:8080/v1/events`.
    pub fn events_url(&self) -> String {
        format!("{}/v1/events", self.api.replacen("http://", "ws://", 1))
    }
}

/// What `/v1/admin/firewall/why/{addr}` says about an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Why {
    /// The reason of the kernel block that applies, if any.
    pub kernel_block: Option<String>,
    /// The reasons of the peer manager's bans of the address.
    pub peer_bans: Vec<String>,
    /// `allowed`, `blocked` or `none`.
    pub decision: String,
}

impl Why {
    /// Reads the answer.
    pub fn from_json(v: &Value) -> Why {
        Why {
            kernel_block: v["kernel"]["block"]["reason"].as_str().map(str::to_string),
            peer_bans: v["peers"]["bans"]
                .as_array()
                .map(|bans| {
                    bans.iter()
                        .filter_map(|b| b["reason"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            decision: v["decision"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// Whether anything blocks the address (kernel or peer manager).
    pub fn blocked(&self) -> bool {
        self.kernel_block.is_some() || !self.peer_bans.is_empty()
    }
}

/// What submitting a transaction came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// 202: pending, with its hash.
    Accepted(String),
    /// 422: refused, with the mempool's reason label.
    Refused(String),
    /// Another status.
    Other(u16),
}

/// A block's hash and the keys of its commit's signers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its hash (hex).
    pub hash: String,
    /// The commit's signers (key hex).
    pub signers: Vec<String>,
}

/// The HTTP client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client with the lab's timeouts.
    pub fn new() -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Client { http })
    }

    /// Sends `request` and reads its answer (at most [`MAX_ANSWER_BYTES`]) as JSON, `null` when
    /// empty, with its status.
    async fn json(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = read_bounded(response, MAX_ANSWER_BYTES).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).context("a JSON answer")?
        };
        Ok((status, value))
    }

    /// `METHOD url`, with the admin bearer `token` and the JSON `body` when given; the answer
    /// must be 200 OK.
    async fn request(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, value) = self
            .json(request)
            .await
            .with_context(|| format!("{method} {url}"))?;
        if status != 200 {
            bail!("{method} {url}: {status} {value}");
        }
        Ok(value)
    }

    /// `GET url` on the public API; the answer must be 200 OK.
    async fn get(&self, url: &str) -> Result<Value> {
        self.request(Method::GET, url, None, None).await
    }

    /// `GET url?query`, waiting at most `timeout`; the answer must be 200 OK and JSON (read
    /// bounded like every answer).
    pub async fn get_query(
        &self,
        url: &str,
        query: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Value> {
        let request = self.http.get(url).query(query).timeout(timeout);
        let (status, value) = self
            .json(request)
            .await
            .with_context(|| format!("GET {url}"))?;
        if status != 200 {
            bail!("GET {url}: {status} {value}");
        }
        Ok(value)
    }

    /// The status of `GET url`, its body unread.
    pub async fn status(&self, url: &str) -> Result<u16> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        Ok(response.status().as_u16())
    }

    /// The node's final height (`/v1/status`).
    pub async fn height(&self, node: &Endpoint) -> Result<u64> {
        let v = self.get(&format!("{}/v1/status", node.api)).await?;
        v["height"].as_u64().context("/v1/status without a height")
    }

    /// The node's metrics.
    pub async fn metrics(&self, node: &Endpoint) -> Result<Metrics> {
        let url = format!("{}/metrics", node.api);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let body = read_bounded(response, MAX_EXPOSITION_BYTES)
            .await
            .with_context(|| format!("GET {url}"))?;
        let text = String::from_utf8(body).with_context(|| format!("GET {url}: not UTF-8"))?;
        Metrics::parse(&text).with_context(|| format!("parsing {url}"))
    }

    /// The validator set: stake by key (hex).
    pub async fn stakes(&self, node: &Endpoint) -> Result<BTreeMap<String, u64>> {
        let v = self.get(&format!("{}/v1/validators", node.api)).await?;
        let list = v["validators"]
            .as_array()
            .context("/v1/validators without validators")?;
        Ok(list
            .iter()
            .filter_map(|e| Some((e["key"].as_str()?.to_string(), e["stake"].as_u64()?)))
            .collect())
    }

    /// The block at `height`.
    pub async fn block(&self, node: &Endpoint, height: u64) -> Result<BlockInfo> {
        let v = self
            .get(&format!("{}/v1/blocks/{height}", node.api))
            .await?;
        Ok(BlockInfo {
            hash: v["hash"]
                .as_str()
                .context("a block without a hash")?
                .to_string(),
            signers: v["commit"]["signers"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The height a transaction was committed at; `None` while pending or unknown.
    pub async fn tx_height(&self, node: &Endpoint, hash: &str) -> Result<Option<u64>> {
        let url = format!("{}/v1/transactions/{hash}", node.api);
        let (status, v) = self
            .json(self.http.get(&url))
            .await
            .with_context(|| format!("GET {url}"))?;
        match status {
            200 => Ok(v["height"].as_u64()),
            404 => Ok(None),
            _ => bail!("GET {url}: {status} {v}"),
        }
    }

    /// An account's committed nonce.
    pub async fn nonce(&self, node: &Endpoint, key: &str) -> Result<u64> {
        let v = self.get(&format!("{}/v1/accounts/{key}", node.api)).await?;
        v["nonce"].as_u64().context("an account without a nonce")
    }

    /// Submits a signed transaction (its canonical encoding, hex).
    pub async fn submit(&self, node: &Endpoint, tx_hex: &str) -> Result<Submitted> {
        let url = format!("{}/v1/transactions", node.api);
        let body = serde_json::json!({ "tx": tx_hex });
        let (status, v) = self.json(self.http.post(&url).json(&body)).await?;
        Ok(match status {
            202 => Submitted::Accepted(v["hash"].as_str().unwrap_or_default().to_string()),
            422 => Submitted::Refused(refusal_reason(&v)),
            s => Submitted::Other(s),
        })
    }

    /// What the node's firewall and peer manager say about `addr`.
    pub async fn why(&self, node: &Endpoint, addr: Ipv4Addr) -> Result<Why> {
        let url = format!("{}/v1/admin/firewall/why/{addr}", node.admin);
        let v = self
            .request(Method::GET, &url, Some(&node.token), None)
            .await?;
        Ok(Why::from_json(&v))
    }

    /// Blocks `net` through the admin API (an operator's blocklist entry).
    pub async fn block_net(&self, node: &Endpoint, net: &str) -> Result<()> {
        let url = format!("{}/v1/admin/firewall/block", node.admin);
        let body = serde_json::json!({ "net": net });
        self.request(Method::POST, &url, Some(&node.token), Some(&body))
            .await
            .map(drop)
    }
}

/// Reads the body of `response`, chunk by chunk, and fails as soon as it passes `max` bytes,
/// whatever its `Content-Length` says (a chunked answer has none).
pub async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        bail!("the answer is larger than {max} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.context("reading the answer")? {
        if body.len() + chunk.len() > max {
            bail!("the answer is larger than {max} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The mempool's reason label in a 422 answer: the error's `reason` field, else the label
/// before the colon of its message.
pub fn refusal_reason(v: &Value) -> String {
    let error = &v["error"];
    if let Some(reason) = error["reason"].as_str() {
        return reason.to_string();
    }
    error["message"]
        .as_str()
        .and_then(|m| m.split_once(':'))
        .map_or("unknown", |(label, _)| label)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn why_answers_are_read_with_or_without_the_kernel() {
        let v = json!({
            "address": "198.18.100.101", "decision": "blocked",
            "kernel": {"allow": null, "block": {"net": "198.18.100.101/32", "reason": "connection_flood", "expires_in_secs": 3000}},
            "peers": {"score": -100.0, "allowlisted": false, "offences": 1, "reports": [],
                      "bans": [{"reason": "connection_flood"}]}
        });
        let why = Why::from_json(&v);
        assert_eq!(why.kernel_block.as_deref(), Some("connection_flood"));
        assert_eq!(why.peer_bans, ["connection_flood"]);
        assert!(why.blocked());
        let v = json!({"address": "198.18.100.1", "decision": "allowed", "kernel": null, "peers": null});
        let why = Why::from_json(&v);
        assert_eq!(
            why,
            Why {
                decision: "allowed".into(),
                ..Why::default()
            }
        );
        assert!(!why.blocked());
    }

    #[test]
    fn refusal_reasons_come_from_the_field_or_the_message() {
        let v = json!({"error": {"code": "transaction_rejected", "reason": "nonce_gap", "message": "x"}});
        assert_eq!(refusal_reason(&v), "nonce_gap");
        let v = json!({"error": {"code": "transaction_rejected", "message": "nonce_replay: nonce 3 is below 5"}});
        assert_eq!(refusal_reason(&v), "nonce_replay");
        assert_eq!(refusal_reason(&json!({})), "unknown");
    }

    /// Serves one answer whose body is `len` bytes sent chunked (no `Content-Length`) and
    /// returns its URL.
    fn serve_chunked(len: usize) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        let url = format!("http://{}/", listener.local_addr().expect("its address"));
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("a connection");
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let mut answer =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    .to_vec();
            for piece in vec![b'a'; len].chunks(1000) {
                answer.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                answer.extend_from_slice(piece);
                answer.extend_from_slice(b"\r\n");
            }
            answer.extend_from_slice(b"0\r\n\r\n");
            let _ = stream.write_all(&answer);
        });
        url
    }

    #[tokio::test]
    async fn chunked_answers_are_read_up_to_the_bound_and_refused_past_it() {
        let http = reqwest::Client::new();
        let response = http
            .get(serve_chunked(5000))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.content_length(), None);
        let body = read_bounded(response, 5000)
            .await
            .expect("within the bound");
        assert_eq!(body.len(), 5000);
        let response = http
            .get(serve_chunked(5001))
            .send()
            .await
            .expect("an answer");
        assert!(read_bounded(response, 5000).await.is_err());
    }

    #[test]
    fn endpoints_are_on_the_node_address() {
        let e = Endpoint::new(Ipv4Addr::new(198, 18, 100, 3), "t".into());
        assert_eq!(e.api, "http://198.18.100.3:8080");
        assert_eq!(e.admin, "http://198.18.100.3:8081");
        assert_eq!(e.events_url(), "ws://198.18.100.3:8080/v1/events");
    }
}

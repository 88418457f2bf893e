//! Block sync: a request-response protocol for a peer's status and for ranges of final blocks
//! with their commit certificates. Every frame is length-prefixed and bounded before it is read.

use std::io;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use types::codec::{Reader, put_list};
use types::{Block, Commit, Decode, DecodeError, Encode, Hash};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/xdp-node/sync/1");
/// Largest request frame, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64;
/// Largest response frame, in bytes: one full block and its certificate always fit.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Most blocks one response may carry, whatever the server's setting.
pub const MAX_BLOCKS_PER_RESPONSE: usize = 256;

/// Fewest bytes a synced block takes (a header and an empty commit take more), bounding the
/// declared count of a response by the bytes actually present.
const MIN_SYNCED_BLOCK_BYTES: usize = 256;

/// What a peer asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRequest {
    /// The peer's chain and height.
    Status,
    /// Final blocks `from`, `from + 1`, … (at most `count`).
    Blocks {
        /// First height.
        from: u64,
        /// Most blocks wanted.
        count: u32,
    },
}

/// A node's view of its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Hash of the genesis: peers on another chain are not synced from.
    pub genesis: Hash,
    /// Height of the last final block.
    pub height: u64,
    /// Its hash.
    pub tip: Hash,
}

/// A final block and the certificate that proves it final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedBlock {
    /// The block.
    pub block: Block,
    /// Precommits of more than two thirds of the stake for it.
    pub commit: Commit,
}

/// Why a server did not serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The requester is over its request budget.
    OverBudget,
    /// The request asked for nothing, or for more than the protocol allows.
    BadRequest,
}

impl Refusal {
    /// Every [`Refusal::label`], so metrics can show each reason from the start.
    pub const LABELS: [&'static str; 2] = ["over_budget", "bad_request"];

    /// A stable label for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Refusal::OverBudget => "over_budget",
            Refusal::BadRequest => "bad_request",
        }
    }
}

/// What a peer answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncResponse {
    /// Answer to [`SyncRequest::Status`].
    Status(Status),
    /// Answer to [`SyncRequest::Blocks`]: consecutive blocks from the requested height, possibly
    /// fewer than asked (none if the server has none).
    Blocks(Vec<SyncedBlock>),
    /// The request was not served.
    Refused(Refusal),
}

impl Encode for SyncRequest {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Status => out.push(0),
            Self::Blocks { from, count } => {
                out.push(1);
                from.encode_to(out);
                count.encode_to(out);
            }
        }
    }
}

impl Decode for SyncRequest {
    const MAX_BYTES: usize = 1 + 8 + 4;
    const NAME: &'static str = "sync request";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(Self::Status),
            1 => Ok(Self::Blocks {
                from: r.u64()?,
                count: r.u32()?,
            }),
            tag => Err(DecodeError::InvalidTag {
                what: "sync request",
                tag,
            }),
        }
    }
}

impl Encode for Status {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.genesis.encode_to(out);
        self.height.encode_to(out);
        self.tip.encode_to(out);
    }
}

impl Decode for Status {
    const MAX_BYTES: usize = 32 + 8 + 32;
    const NAME: &'static str = "status";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Status {
            genesis: Hash::decode_from(r)?,
            height: r.u64()?,
            tip: Hash::decode_from(r)?,
        })
    }
}

impl Encode for SyncedBlock {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.block.encode_to(out);
        self.commit.encode_to(out);
    }
}

impl Decode for SyncedBlock {
    const MAX_BYTES: usize = Block::MAX_BYTES + Commit::MAX_BYTES;
    const NAME: &'static str = "synced block";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SyncedBlock {
            block: Block::decode_from(r)?,
            commit: Commit::decode_from(r)?,
        })
    }
}

impl Encode for SyncResponse {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Status(status) => {
                out.push(0);
                status.encode_to(out);
            }
            Self::Blocks(blocks) => {
                out.push(1);
                put_list(out, blocks);
            }
            Self::Refused(refusal) => {
                out.push(2);
                out.push(match refusal {
                    Refusal::OverBudget => 0,
                    Refusal::BadRequest => 1,
                });
            }
        }
    }
}

impl Decode for SyncResponse {
    const MAX_BYTES: usize = MAX_RESPONSE_BYTES;
    const NAME: &'static str = "sync response";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(Self::Status(Status::decode_from(r)?)),
            1 => Ok(Self::Blocks(r.list(
                "synced blocks",
                MAX_BLOCKS_PER_RESPONSE,
                MIN_SYNCED_BLOCK_BYTES,
            )?)),
            2 => match r.u8()? {
                0 => Ok(Self::Refused(Refusal::OverBudget)),
                1 => Ok(Self::Refused(Refusal::BadRequest)),
                tag => Err(DecodeError::InvalidTag {
                    what: "sync refusal",
                    tag,
                }),
            },
            tag => Err(DecodeError::InvalidTag {
                what: "sync response",
                tag,
            }),
        }
    }
}

/// Reads and writes sync frames: a big-endian `u32` length, then the encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCodec;

async fn read_frame<T, M>(io: &mut T, max: usize) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: Decode,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} of {len} bytes is over the limit of {max}", M::NAME),
        ));
    }
    let mut bytes = vec![0u8; len];
    io.read_exact(&mut bytes).await?;
    M::from_bytes(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame<T, M>(io: &mut T, message: &M) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Encode,
{
    let bytes = message.to_bytes();
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

#[async_trait]
impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_REQUEST_BYTES).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_RESPONSE_BYTES).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    fn frames(message: &impl Encode) -> Vec<u8> {
        let bytes = message.to_bytes();
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&bytes);
        out
    }

    #[test]
    fn labels_lists_the_label_of_every_refusal_once() {
        let every = [Refusal::OverBudget, Refusal::BadRequest];
        let labels: Vec<&str> = every.into_iter().map(Refusal::label).collect();
        assert_eq!(labels, Refusal::LABELS);
        assert_ne!(labels[0], labels[1], "no label twice");
    }

    #[test]
    fn requests_and_responses_round_trip_through_the_codec() {
        futures::executor::block_on(async {
            let mut codec = SyncCodec;
            for request in [
                SyncRequest::Status,
                SyncRequest::Blocks { from: 7, count: 32 },
            ] {
                let mut out = Vec::new();
                codec
                    .write_request(&PROTOCOL, &mut out, request.clone())
                    .await
                    .expect("writes");
                let read = codec
                    .read_request(&PROTOCOL, &mut out.as_slice())
                    .await
                    .expect("reads");
                assert_eq!(read, request);
            }
            for response in [
                SyncResponse::Status(Status {
                    genesis: Hash([1; 32]),
                    height: 9,
                    tip: Hash([2; 32]),
                }),
                SyncResponse::Blocks(Vec::new()),
                SyncResponse::Refused(Refusal::OverBudget),
            ] {
                let mut out = Vec::new();
                codec
                    .write_response(&PROTOCOL, &mut out, response.clone())
                    .await
                    .expect("writes");
                let read = codec
                    .read_response(&PROTOCOL, &mut out.as_slice())
                    .await
                    .expect("reads");
                assert_eq!(read, response);
            }
        });
    }

    #[test]
    fn a_response_of_real_blocks_round_trips() {
        let test = chain::testkit::TestChain::new(1, 2, 1);
        let ledger =
            chain::Ledger::open(storage::MemStore::new(), &test.genesis).expect("genesis opens");
        let block = ledger
            .propose(
                test.validators[0].public_key(),
                test.genesis.time_ms + 1,
                None,
                vec![test.transfer(0, 1, 0, 10)],
            )
            .expect("block builds")
            .executed
            .block;
        let commit = Commit {
            height: 1,
            round: 0,
            block: block.hash(),
            signatures: Vec::new(),
        };
        let response = SyncResponse::Blocks(vec![SyncedBlock { block, commit }; 3]);
        assert_eq!(
            SyncResponse::from_bytes(&response.to_bytes()),
            Ok(response.clone())
        );
        futures::executor::block_on(async {
            let mut out = Vec::new();
            let mut codec = SyncCodec;
            codec
                .write_response(&PROTOCOL, &mut out, response.clone())
                .await
                .expect("writes");
            let read = codec
                .read_response(&PROTOCOL, &mut out.as_slice())
                .await
                .expect("reads");
            assert_eq!(read, response);
        });
    }

    #[test]
    fn oversized_truncated_and_unknown_frames_are_refused_before_decoding() {
        futures::executor::block_on(async {
            let mut codec = SyncCodec;
            let mut huge = ((MAX_REQUEST_BYTES + 1) as u32).to_be_bytes().to_vec();
            huge.resize(4 + MAX_REQUEST_BYTES + 1, 0);
            let err = codec
                .read_request(&PROTOCOL, &mut huge.as_slice())
                .await
                .expect_err("over the limit");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);

            let whole = frames(&SyncRequest::Blocks { from: 1, count: 2 });
            for cut in 0..whole.len() {
                assert!(
                    codec
                        .read_request(&PROTOCOL, &mut &whole[..cut])
                        .await
                        .is_err(),
                    "request cut at {cut} was read"
                );
            }
            let mut unknown = frames(&SyncRequest::Status);
            unknown[4] = 9;
            assert!(
                codec
                    .read_request(&PROTOCOL, &mut unknown.as_slice())
                    .await
                    .is_err()
            );
            let big_len = ((MAX_RESPONSE_BYTES + 1) as u32).to_be_bytes();
            assert!(
                codec
                    .read_response(&PROTOCOL, &mut &big_len[..])
                    .await
                    .is_err()
            );
        });
    }
}

//! Transactions: transfers, staking, and slashing by evidence; signed by their sender.

use crate::chain_id::ChainId;
use crate::codec::{Decode, DecodeError, Encode, Reader};
use crate::crypto::{Domain, PublicKey, SecretKey, Signature, SignatureError};
use crate::hash::{Hash, Tag};
use crate::limits::MAX_TX_BYTES;
use crate::vote::Evidence;

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Moves `amount` from the sender to `to`.
    Transfer {
        /// Recipient.
        to: PublicKey,
        /// Amount moved.
        amount: u64,
    },
    /// Moves `amount` of the sender's balance into its validator stake (joining the set if
    /// it was not in it).
    Bond {
        /// Amount staked.
        amount: u64,
    },
    /// Starts returning `amount` of the sender's stake to its balance; it stays slashable
    /// until released.
    Unbond {
        /// Amount unstaked.
        amount: u64,
    },
    /// Reports equivocation; its offender's stake is slashed.
    Slash(Box<Evidence>),
}

impl Payload {
    /// A stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Transfer { .. } => "transfer",
            Self::Bond { .. } => "bond",
            Self::Unbond { .. } => "unbond",
            Self::Slash(_) => "slash",
        }
    }

    /// Balance the payload itself takes from the sender (fees not included).
    pub fn spend(&self) -> u64 {
        match self {
            Self::Transfer { amount, .. } | Self::Bond { amount } => *amount,
            Self::Unbond { .. } | Self::Slash(_) => 0,
        }
    }
}

impl Encode for Payload {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Transfer { to, amount } => {
                out.push(0);
                to.encode_to(out);
                amount.encode_to(out);
            }
            Self::Bond { amount } => {
                out.push(1);
                amount.encode_to(out);
            }
            Self::Unbond { amount } => {
                out.push(2);
                amount.encode_to(out);
            }
            Self::Slash(evidence) => {
                out.push(3);
                evidence.encode_to(out);
            }
        }
    }
}

impl Decode for Payload {
    const MAX_BYTES: usize = 1 + Evidence::MAX_BYTES;
    const NAME: &'static str = "payload";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => Payload::Transfer {
                to: PublicKey::decode_from(r)?,
                amount: r.u64()?,
            },
            1 => Payload::Bond { amount: r.u64()? },
            2 => Payload::Unbond { amount: r.u64()? },
            3 => Payload::Slash(Box::new(Evidence::decode_from(r)?)),
            tag => {
                return Err(DecodeError::InvalidTag {
                    what: Self::NAME,
                    tag,
                });
            }
        })
    }
}

/// An unsigned transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The chain it is meant for.
    pub chain_id: ChainId,
    /// The account that signs, pays the fee and whose nonce it uses.
    pub sender: PublicKey,
    /// Must equal the sender's account nonce when applied (0 for the first transaction).
    pub nonce: u64,
    /// Paid by the sender to the block's proposer.
    pub fee: u64,
    /// What it does.
    pub payload: Payload,
}

/// A transaction id: the hash of the unsigned transaction, so it does not depend on the
/// signature's encoding.
pub type TxHash = Hash;

impl Transaction {
    /// The transaction id.
    pub fn id(&self) -> TxHash {
        Hash::of(Tag::Transaction, self)
    }

    /// Signs with `key` (whose public key should be `sender`).
    pub fn sign(self, key: &SecretKey) -> SignedTransaction {
        let signature = key.sign(Domain::Transaction, &self.chain_id, &self);
        SignedTransaction {
            tx: self,
            signature,
        }
    }
}

impl Encode for Transaction {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.chain_id.encode_to(out);
        self.sender.encode_to(out);
        self.nonce.encode_to(out);
        self.fee.encode_to(out);
        self.payload.encode_to(out);
    }
}

impl Decode for Transaction {
    const MAX_BYTES: usize = MAX_TX_BYTES - 64;
    const NAME: &'static str = "transaction";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Transaction {
            chain_id: ChainId::decode_from(r)?,
            sender: PublicKey::decode_from(r)?,
            nonce: r.u64()?,
            fee: r.u64()?,
            payload: Payload::decode_from(r)?,
        })
    }
}

/// A transaction with its sender's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    /// The transaction.
    pub tx: Transaction,
    /// Signature by `tx.sender` in [`Domain::Transaction`] on `tx.chain_id`.
    pub signature: Signature,
}

impl SignedTransaction {
    /// The transaction id (independent of the signature).
    pub fn id(&self) -> TxHash {
        self.tx.id()
    }

    /// Checks the sender's signature.
    pub fn verify(&self) -> Result<(), SignatureError> {
        self.tx.sender.verify(
            Domain::Transaction,
            &self.tx.chain_id,
            &self.tx,
            &self.signature,
        )
    }
}

impl Encode for SignedTransaction {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.tx.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for SignedTransaction {
    const MAX_BYTES: usize = MAX_TX_BYTES;
    const NAME: &'static str = "signed transaction";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedTransaction {
            tx: Transaction::decode_from(r)?,
            signature: Signature::decode_from(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(key: &SecretKey, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: ChainId::new("test").expect("valid chain id"),
            sender: key.public_key(),
            nonce,
            fee: 1,
            payload: Payload::Transfer {
                to: SecretKey::from_seed([9; 32]).public_key(),
                amount: 10,
            },
        }
        .sign(key)
    }

    #[test]
    fn signed_transactions_round_trip_and_verify() {
        let key = SecretKey::from_seed([1; 32]);
        let tx = transfer(&key, 0);
        let decoded = SignedTransaction::from_bytes(&tx.to_bytes()).expect("decodes");
        assert_eq!(decoded, tx);
        assert_eq!(decoded.verify(), Ok(()));
    }

    #[test]
    fn a_transaction_signed_for_another_chain_does_not_verify_here() {
        let key = SecretKey::from_seed([1; 32]);
        let mut tx = transfer(&key, 0);
        tx.tx.chain_id = ChainId::new("other").expect("valid chain id");
        assert!(tx.verify().is_err());
    }

    #[test]
    fn the_id_ignores_the_signature_but_covers_every_field() {
        let key = SecretKey::from_seed([1; 32]);
        let a = transfer(&key, 0);
        let mut b = a.clone();
        b.signature = transfer(&key, 1).signature;
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), transfer(&key, 1).id());
    }

    #[test]
    fn unknown_payload_tags_are_rejected() {
        let key = SecretKey::from_seed([1; 32]);
        let mut bytes = transfer(&key, 0).tx.to_bytes();
        let tag_at = 4 + 4 + 32 + 8 + 8;
        bytes[tag_at] = 9;
        assert_eq!(
            Transaction::from_bytes(&bytes),
            Err(DecodeError::InvalidTag {
                what: "payload",
                tag: 9
            })
        );
    }
}

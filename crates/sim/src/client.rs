//! The transaction client: a steady trickle of transfers so blocks are not empty, and
//! resubmission of what the network lost. Slashing transactions are the engines' own business:
//! each engine keeps its slashings in its mempool until the chain applies one for the offence.
//!
//! # Design
//! One transfer per account in flight at a time, with the next nonce the committed state
//! expects. A transfer not committed after [`RESUBMIT_MS`] is sent again, identical (its
//! content depends only on account and nonce), so a lost transaction never leaves a nonce gap.

use chain::testkit::TestChain;
use types::SignedTransaction;

/// Funded accounts that send transfers.
pub const ACCOUNTS: usize = 16;
/// Time between two transfers, milliseconds.
pub const TX_INTERVAL_MS: u64 = 100;
/// A transaction not committed after this long is sent again, milliseconds.
pub const RESUBMIT_MS: u64 = 3_000;

/// A transaction sent and not known committed.
#[derive(Debug, Clone)]
struct InFlight {
    tx: SignedTransaction,
    sent_ms: u64,
}

/// Makes transfers and remembers what is in flight.
#[derive(Debug)]
pub struct Client {
    next_account: usize,
    transfers: Vec<Option<InFlight>>,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            next_account: 0,
            transfers: vec![None; ACCOUNTS],
        }
    }
}

impl Client {
    /// The transfer to send now, if any: from the next account in turn, whose committed nonce
    /// `committed_nonce(account)` reads.
    pub fn next_transfer(
        &mut self,
        chain: &TestChain,
        now_ms: u64,
        committed_nonce: impl Fn(usize) -> Option<u64>,
    ) -> Option<SignedTransaction> {
        let account = self.next_account;
        self.next_account = (self.next_account + 1) % ACCOUNTS;
        let nonce = committed_nonce(account)?;
        if let Some(f) = &self.transfers[account]
            && f.tx.tx.nonce >= nonce
            && now_ms < f.sent_ms + RESUBMIT_MS
        {
            return None;
        }
        let tx = chain.transfer(account, (account + 1) % ACCOUNTS, nonce, 1 + nonce % 10);
        self.transfers[account] = Some(InFlight {
            tx: tx.clone(),
            sent_ms: now_ms,
        });
        Some(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_in_flight_is_resent_identical_only_after_the_resubmit_time() {
        let chain = TestChain::new(4, ACCOUNTS, 1);
        let mut client = Client::default();
        let first = client.next_transfer(&chain, 0, |_| Some(0)).expect("sent");
        for _ in 1..ACCOUNTS {
            assert!(client.next_transfer(&chain, 0, |_| Some(0)).is_some());
        }
        assert_eq!(client.next_transfer(&chain, 100, |_| Some(0)), None);
        for _ in 1..ACCOUNTS {
            client.next_transfer(&chain, 100, |_| Some(0));
        }
        let again = client
            .next_transfer(&chain, RESUBMIT_MS, |_| Some(0))
            .expect("resent");
        assert_eq!(again, first);
        for _ in 1..ACCOUNTS {
            client.next_transfer(&chain, RESUBMIT_MS, |_| Some(1));
        }
        let next = client
            .next_transfer(&chain, RESUBMIT_MS, |_| Some(1))
            .expect("next nonce");
        assert_eq!(next.tx.nonce, 1);
    }
}

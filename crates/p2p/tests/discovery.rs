//! Peer discovery with Kademlia: two nodes that only know a third find each other.

use std::sync::Arc;
use std::time::Duration;

use chain::testkit::TestChain;
use p2p::network::Validation;
use p2p::{Multiaddr, Network, NetworkConfig, NetworkEvent, PeerId};
use storage::MemStore;
use tokio::sync::mpsc;

const PORT: u16 = 19_200;

fn addr(i: usize) -> Multiaddr {
    format!("/ip4/127.0.20.{}/tcp/{PORT}", i + 1)
        .parse()
        .expect("valid multiaddr")
}

/// Runs a node; reports each peer it connects to.
fn spawn(test: &TestChain, i: usize, bootstrap: Vec<Multiaddr>) -> mpsc::UnboundedReceiver<PeerId> {
    let config = NetworkConfig {
        listen: vec![addr(i)],
        bootstrap,
        kademlia: true,
        ..NetworkConfig::default()
    };
    let mut network = Network::new(
        &test.validators[i],
        test.genesis.chain_id.clone(),
        Arc::new(MemStore::new()),
        config,
        None,
    )
    .expect("network starts");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match network.next().await {
                NetworkEvent::Connected(peer) => {
                    let _ = tx.send(peer);
                }
                NetworkEvent::Gossip { from, id, gossip } => {
                    let kind = gossip.kind();
                    network.validated(&id, from, kind, Validation::Accept);
                }
                _ => {}
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_only_know_a_third_find_each_other_through_kademlia() {
    let test = TestChain::new(3, 1, 3);
    let hub = addr(0).with(p2p::multiaddr::Protocol::P2p(
        p2p::peer_id_of(&test.validators[0]).expect("ed25519 key"),
    ));
    let _hub = spawn(&test, 0, Vec::new());
    let mut a = spawn(&test, 1, vec![hub.clone()]);
    let _c = spawn(&test, 2, vec![hub]);
    let c_id = p2p::peer_id_of(&test.validators[2]).expect("ed25519 key");
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(peer) = a.recv().await {
            if peer == c_id {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "node 1 never connected to node 2, which only the hub knew"
    );
}

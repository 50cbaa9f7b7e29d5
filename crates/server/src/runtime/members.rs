//! The address book: where every member of the cluster listens, so that a node can reach
//! members that joined after it started.
//!
//! Raft decides *who* is a member (configurations are log entries, by node id); the address
//! book says *where* each id listens. A node's book starts from its TOML's `[[nodes]]` table
//! and the book it saved in its data directory (`members.json`). The leader adds a node's
//! addresses when `add-learner` names them, and sends its whole book to every member of its
//! configuration at once when the book or the configuration changes and every second after
//! ([`crate::runtime::boundary::PeerMessage::Addresses`]); each node merges what it receives,
//! saves it, and opens a connection to every new peer. A node id is never reused and a node
//! keeps its addresses, so merging never has to choose between two answers; if an id's
//! addresses do change, the newest heard wins. The book holds at most [`BOOK_ENTRIES_MAX`]
//! entries: a node that is neither in it nor ever added stays unreachable, nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chorus_core::NodeId;
use tokio::sync::mpsc;

use super::boundary::{MemberAddress, PeerMessage};
use super::transport::{Identity, run_outbound};

/// The most entries an address book holds (members come and go; ids are never reused).
pub const BOOK_ENTRIES_MAX: usize = 1024;

/// The file in the data directory that keeps the address book across restarts.
pub const BOOK_FILE_NAME: &str = "members.json";

/// Where every known node listens.
#[derive(Debug, Default)]
pub struct AddressBook {
    entries: BTreeMap<NodeId, MemberAddress>,
    /// Where the book is saved (none in unit tests).
    file: Option<PathBuf>,
    /// Bumped on every change, so the leader knows when to send the book again.
    version: u64,
}

impl AddressBook {
    /// A book of `initial` (the TOML's table) and what `file` saved, if it exists and parses
    /// (a damaged file is ignored with a warning: the leader sends the book again).
    #[must_use]
    pub fn open(initial: impl IntoIterator<Item = MemberAddress>, file: Option<PathBuf>) -> Self {
        let mut book = AddressBook {
            entries: BTreeMap::new(),
            file: None,
            version: 0,
        };
        book.merge(initial);
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<Vec<MemberAddress>>(&bytes) {
                    Ok(saved) => {
                        book.merge(saved);
                    }
                    Err(error) => {
                        tracing::warn!(file = %path.display(), %error, "ignored a damaged address book");
                    }
                },
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "cannot read the address book");
                }
            }
        }
        book.file = file;
        book
    }

    /// Where `id` listens, if known.
    #[must_use]
    pub fn get(&self, id: NodeId) -> Option<&MemberAddress> {
        self.entries.get(&id)
    }

    /// Every entry, in id order.
    #[must_use]
    pub fn all(&self) -> Vec<MemberAddress> {
        self.entries.values().copied().collect()
    }

    /// Bumped on every change.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Takes in `entries`; returns those that were new or changed (and saves the book if
    /// any). Node 0 and entries beyond [`BOOK_ENTRIES_MAX`] are ignored.
    pub fn merge(
        &mut self,
        entries: impl IntoIterator<Item = MemberAddress>,
    ) -> Vec<MemberAddress> {
        let mut changed = Vec::new();
        for entry in entries {
            if entry.id == NodeId(0) || self.entries.get(&entry.id) == Some(&entry) {
                continue;
            }
            if !self.entries.contains_key(&entry.id) && self.entries.len() >= BOOK_ENTRIES_MAX {
                tracing::warn!(
                    node = entry.id.0,
                    "the address book is full; ignored a node"
                );
                continue;
            }
            self.entries.insert(entry.id, entry);
            changed.push(entry);
        }
        if !changed.is_empty() {
            self.version += 1;
            self.save();
        }
        changed
    }

    /// Writes the book to its file (write, sync, rename). A failure is logged: the book is
    /// a cache of what the leader sends, not a promise.
    fn save(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let result = (|| -> std::io::Result<()> {
            let bytes = serde_json::to_vec_pretty(&self.all()).map_err(std::io::Error::other)?;
            let temporary = path.with_extension("json.tmp");
            {
                use std::io::Write;
                let mut file = std::fs::File::create(&temporary)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
            }
            std::fs::rename(&temporary, path)
        })();
        if let Err(error) = result {
            tracing::warn!(file = %path.display(), %error, "cannot save the address book");
        }
    }
}

/// Opens outbound connections to peers learned at run time.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// The async runtime the connection tasks run on.
    pub handle: tokio::runtime::Handle,
    /// Who this node is (its known peers are updated as the book grows, so their inbound
    /// connections are accepted).
    pub identity: Arc<Identity>,
    /// Messages queued for one peer.
    pub queue_max: usize,
}

impl Dialer {
    /// Starts a connection task to `peer` at `address`; returns its queue. The task ends
    /// when the queue's sender is dropped.
    #[must_use]
    pub fn dial(&self, peer: NodeId, address: std::net::SocketAddr) -> mpsc::Sender<PeerMessage> {
        if let Ok(mut peers) = self.identity.peers.write() {
            peers.insert(peer, address);
        }
        let (sender, receiver) = mpsc::channel(self.queue_max);
        self.handle
            .spawn(run_outbound(self.identity.clone(), peer, address, receiver));
        sender
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, port: u16) -> MemberAddress {
        let address = |offset: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port + offset));
        MemberAddress {
            id: NodeId(id),
            peer: address(0),
            redis: Some(address(1)),
            admin: address(2),
        }
    }

    #[test]
    fn the_book_merges_saves_and_reopens_and_ignores_node_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(BOOK_FILE_NAME);
        let mut book = AddressBook::open([entry(1, 1000)], Some(file.clone()));
        assert_eq!(book.version(), 1);
        assert!(book.merge([entry(1, 1000)]).is_empty(), "nothing new");
        assert_eq!(
            book.merge([entry(2, 2000), entry(0, 3000)]),
            vec![entry(2, 2000)]
        );
        assert_eq!(
            book.merge([entry(2, 2100)]),
            vec![entry(2, 2100)],
            "newest wins"
        );
        let reopened = AddressBook::open([], Some(file.clone()));
        assert_eq!(reopened.all(), vec![entry(1, 1000), entry(2, 2100)]);
        std::fs::write(&file, b"{ not json").unwrap();
        assert_eq!(
            AddressBook::open([entry(3, 3000)], Some(file)).all(),
            vec![entry(3, 3000)]
        );
    }
}

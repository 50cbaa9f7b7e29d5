//! [`Map`], the key space: every key with its stored record, in key order, able to note which
//! keys a command wrote.
//!
//! Why a type of its own rather than the persistent map itself: passive replication ships a
//! command's *effect* (the after-image of every key it wrote or removed, see
//! [`crate::KvStore`]'s `execute`), and the only way to know every key a command touched,
//! whatever the command and whatever it does to keys on the side, is to watch the one place
//! every change goes through. The methods mirror the persistent map's (`get`, `get_mut`,
//! `insert_mut`, `remove_mut`, …), so code written against the map reads the same.
//!
//! Invariants:
//! - Every change goes through [`Map::insert_mut`], [`Map::get_mut`], [`Map::remove_mut`] or
//!   [`Map::clear`]; while recording, each notes its key (`get_mut` conservatively, even if the
//!   caller then changes nothing), and `clear` notes that the whole space was emptied. Never
//!   replace a recording map wholesale (`*map = Map::new_sync()`): the store asserts that the
//!   recording survived the command.
//! - A clone never records, and equality compares the entries only: the recording is scratch
//!   state of one execution, not part of the replicated state.

use std::borrow::Borrow;
use std::collections::BTreeSet;

use bytes::Bytes;
use rpds::RedBlackTreeMapSync;

use crate::typed::Value;

/// What one command wrote, noted while recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// The whole key space was emptied (before the writes of `keys`, which came after).
    pub(crate) cleared: bool,
    /// Every key inserted, removed or handed out mutably.
    pub(crate) keys: BTreeSet<Bytes>,
}

/// The key space: every key with its typed value, in key order. A persistent map, so that a
/// clone (a snapshot, a read) costs O(1) and never sees later writes.
#[derive(Debug, Default)]
pub struct Map {
    entries: RedBlackTreeMapSync<Bytes, Value>,
    written: Option<Box<Written>>,
}

impl Clone for Map {
    /// The same entries; the clone does not record.
    fn clone(&self) -> Map {
        Map {
            entries: self.entries.clone(),
            written: None,
        }
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Map {}

impl Map {
    /// An empty key space.
    #[must_use]
    pub fn new_sync() -> Map {
        Map {
            entries: RedBlackTreeMapSync::new_sync(),
            written: None,
        }
    }

    /// A key's value.
    #[must_use]
    pub fn get<K>(&self, key: &K) -> Option<&Value>
    where
        Bytes: Borrow<K>,
        K: Ord + AsRef<[u8]> + ?Sized,
    {
        self.entries.get(key)
    }

    /// A key's value, to change in place (noted as written while recording).
    pub fn get_mut<K>(&mut self, key: &K) -> Option<&mut Value>
    where
        Bytes: Borrow<K>,
        K: Ord + AsRef<[u8]> + ?Sized,
    {
        self.note(key);
        self.entries.get_mut(key)
    }

    /// Sets a key's value.
    pub fn insert_mut(&mut self, key: Bytes, value: Value) {
        self.note(&key);
        self.entries.insert_mut(key, value);
    }

    /// Removes a key; whether it was there.
    pub fn remove_mut<K>(&mut self, key: &K) -> bool
    where
        Bytes: Borrow<K>,
        K: Ord + AsRef<[u8]> + ?Sized,
    {
        self.note(key);
        self.entries.remove_mut(key)
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.entries = RedBlackTreeMapSync::new_sync();
        if let Some(written) = &mut self.written {
            written.cleared = true;
            written.keys.clear();
        }
    }

    /// Whether the key exists.
    #[must_use]
    pub fn contains_key<K>(&self, key: &K) -> bool
    where
        Bytes: Borrow<K>,
        K: Ord + AsRef<[u8]> + ?Sized,
    {
        self.entries.contains_key(key)
    }

    /// Whether there are no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of keys.
    #[must_use]
    pub fn size(&self) -> usize {
        self.entries.size()
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.entries.keys()
    }

    /// The `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Value)> {
        self.entries.iter()
    }

    /// Starts noting the keys written.
    pub(crate) fn start_recording(&mut self) {
        self.written = Some(Box::default());
    }

    /// Stops noting and returns what was written; `None` if no recording was running (it was
    /// never started, or the map was replaced wholesale while recording).
    pub(crate) fn stop_recording(&mut self) -> Option<Written> {
        self.written.take().map(|written| *written)
    }

    fn note<K>(&mut self, key: &K)
    where
        Bytes: Borrow<K>,
        K: Ord + AsRef<[u8]> + ?Sized,
    {
        if let Some(written) = &mut self.written
            && !written.keys.contains(key)
        {
            written.keys.insert(Bytes::copy_from_slice(key.as_ref()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// Proves every kind of change is noted, a clear forgets the writes before it, and clones
    /// neither record nor count the recording in equality.
    #[test]
    fn recording_notes_every_change() {
        let mut map = Map::new_sync();
        map.insert_mut(b("before"), Value::String(b("0")));
        map.start_recording();
        map.insert_mut(b("a"), Value::String(b("1")));
        let clone = map.clone();
        assert_eq!(clone, map);
        let _ = map.get_mut(&b"before"[..]);
        assert!(!map.remove_mut(&b"absent"[..]));
        let written = map.stop_recording().expect("recording");
        assert!(!written.cleared);
        assert_eq!(
            written.keys,
            BTreeSet::from([b("a"), b("absent"), b("before")])
        );
        let mut clone = clone;
        assert!(clone.stop_recording().is_none(), "a clone does not record");

        map.start_recording();
        map.insert_mut(b("x"), Value::String(b("1")));
        map.clear();
        map.insert_mut(b("y"), Value::String(b("2")));
        let written = map.stop_recording().expect("recording");
        assert!(written.cleared);
        assert_eq!(written.keys, BTreeSet::from([b("y")]));
        assert_eq!(map.size(), 1);
    }
}

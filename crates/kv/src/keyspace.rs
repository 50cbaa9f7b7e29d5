//! The key space: every key's stored record (its typed value and its expiry time), and the
//! keys ordered by expiry time.
//!
//! Why a type of its own: expiry is part of each key's record, so that whatever copies,
//! moves or ships a record (a snapshot, `RENAME`, `COPY`, a replicated effect) carries the
//! expiry with it, and removing a key can never leave an expiry behind. The deadline index
//! beside the records lets the store remove every key whose time has come in O(log n) per key,
//! without scanning the map.
//!
//! Times are milliseconds of the log clock (see [`crate::KvStore`]): Unix time as the nodes
//! that proposed the entries read it, made monotonic by the log. Nothing here reads a clock.
//!
//! Each record also carries its version: the log index of the command that last wrote the key
//! (`WATCH` compares it at `EXEC`). A removed key has no version; a key written again gets a
//! larger one, so a change and a change back are still seen.
//!
//! Invariants:
//! - `deadlines` holds exactly one `(at, key)` per record whose `expires_at` is `Some(at)`, so
//!   the soonest deadline is its first element.
//! - Both maps are persistent (structurally shared): cloning a [`Map`] is O(1), which is what
//!   makes a snapshot cheap and a read on a clone free.
//!
//! The method names follow `rpds`'s maps (`get`, `get_mut`, `insert_mut`, `remove_mut`), so
//! the code on values reads as before records existed; `insert_mut` is an overwrite and clears
//! the expiry, as Redis's `SET` does, while changes through `get_mut` keep it, as Redis's
//! `APPEND` or `HSET` do. Every write stamps the record with [`Map::set_index`]'s index, except
//! `get_mut`, whose caller calls [`Map::touch`] once its change succeeded (a refused change
//! leaves the record as it was).

use std::collections::BTreeSet;

use bytes::Bytes;
use rpds::{RedBlackTreeMapSync, RedBlackTreeSetSync};

use crate::typed::Value;

/// One key's stored record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// The value.
    pub value: Value,
    /// When the key expires, in log-clock milliseconds; `None` for never.
    pub expires_at: Option<u64>,
    /// The log index of the command that last wrote the key (set by the map on every write).
    pub version: u64,
}

impl Record {
    /// A record for `value` (its version is set when the map stores it).
    #[must_use]
    pub fn new(value: Value, expires_at: Option<u64>) -> Record {
        Record {
            value,
            expires_at,
            version: 0,
        }
    }
}

/// What one command wrote, noted while recording (passive replication ships the after-image
/// of every key written: see `KvStore`'s `execute`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// The whole key space was emptied (before the writes of `keys`, which came after).
    pub(crate) cleared: bool,
    /// Every key inserted, removed, expired or handed out mutably.
    pub(crate) keys: BTreeSet<Bytes>,
}

/// The key space: records by key, and the keys that expire by deadline.
///
/// While recording (during `KvStore`'s `execute`), every change notes its key — `get_mut`
/// conservatively, even if the caller then changes nothing — and [`Map::clear`] notes that the
/// whole space was emptied; never replace a recording map wholesale (`*map = Map::new_sync()`):
/// the store asserts that the recording survived the command. A clone never records.
#[derive(Debug)]
pub struct Map {
    records: RedBlackTreeMapSync<Bytes, Record>,
    deadlines: RedBlackTreeSetSync<(u64, Bytes)>,
    /// The log index of the command being applied: the version every write stamps.
    index: u64,
    written: Option<Box<Written>>,
}

impl Clone for Map {
    /// The same records; the clone does not record.
    fn clone(&self) -> Map {
        Map {
            records: self.records.clone(),
            deadlines: self.deadlines.clone(),
            index: self.index,
            written: None,
        }
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        // The deadlines follow from the records.
        self.records == other.records
    }
}

impl Eq for Map {}

impl Default for Map {
    fn default() -> Map {
        Map::new_sync()
    }
}

impl Map {
    /// An empty key space.
    #[must_use]
    pub fn new_sync() -> Map {
        Map {
            records: RedBlackTreeMapSync::new_sync(),
            deadlines: RedBlackTreeSetSync::new_sync(),
            index: 0,
            written: None,
        }
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.records = RedBlackTreeMapSync::new_sync();
        self.deadlines = RedBlackTreeSetSync::new_sync();
        if let Some(written) = &mut self.written {
            written.cleared = true;
            written.keys.clear();
        }
    }

    /// Starts noting the keys written.
    pub(crate) fn start_recording(&mut self) {
        self.written = Some(Box::default());
    }

    /// Stops noting and returns what was written; `None` if no recording was running.
    pub(crate) fn stop_recording(&mut self) -> Option<Written> {
        self.written.take().map(|written| *written)
    }

    fn note(&mut self, key: &[u8]) {
        if let Some(written) = &mut self.written
            && !written.keys.contains(key)
        {
            written.keys.insert(Bytes::copy_from_slice(key));
        }
    }

    /// Sets the log index that the following writes stamp on the records they write.
    pub fn set_index(&mut self, index: u64) {
        self.index = index;
    }

    /// A key's version (the index of the command that last wrote it), 0 if absent.
    #[must_use]
    pub fn version(&self, key: &[u8]) -> u64 {
        self.records.get(key).map_or(0, |record| record.version)
    }

    /// Marks a key as written now (after a change through [`Map::get_mut`]).
    pub fn touch(&mut self, key: &[u8]) {
        self.note(key);
        let index = self.index;
        if let Some(record) = self.records.get_mut(key) {
            record.version = index;
        }
    }

    /// A key's value.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.records.get(key).map(|record| &record.value)
    }

    /// A key's value, to change in place; the key keeps its expiry. The caller calls
    /// [`Map::touch`] once the change succeeded.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Value> {
        self.note(key);
        self.records.get_mut(key).map(|record| &mut record.value)
    }

    /// A key's whole record.
    #[must_use]
    pub fn record(&self, key: &[u8]) -> Option<&Record> {
        self.records.get(key)
    }

    /// Whether the key exists.
    #[must_use]
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.records.contains_key(key)
    }

    /// Sets a key's value, dropping any expiry it had (an overwrite).
    pub fn insert_mut(&mut self, key: Bytes, value: Value) {
        self.insert_record(key, Record::new(value, None));
    }

    /// Sets a key's value, keeping the expiry of the value it replaces (a change of the
    /// value, such as `APPEND` or `INCR`).
    pub fn replace_value(&mut self, key: Bytes, value: Value) {
        self.note(&key);
        let index = self.index;
        match self.records.get_mut(&key) {
            Some(record) => {
                record.value = value;
                record.version = index;
            }
            None => self.insert_mut(key, value),
        }
    }

    /// Stores a whole record (stamped with the current index), replacing the key's old one.
    pub fn insert_record(&mut self, key: Bytes, record: Record) {
        let record = Record {
            version: self.index,
            ..record
        };
        self.restore_record(key, record);
    }

    /// Stores a record as it is, version included (to rebuild a map from a snapshot).
    pub fn restore_record(&mut self, key: Bytes, record: Record) {
        self.note(&key);
        self.forget_deadline(&key);
        if let Some(at) = record.expires_at {
            self.deadlines.insert_mut((at, key.clone()));
        }
        self.records.insert_mut(key, record);
    }

    /// Removes a key; whether it existed.
    pub fn remove_mut(&mut self, key: &[u8]) -> bool {
        self.note(key);
        self.forget_deadline(key);
        self.records.remove_mut(key)
    }

    fn forget_deadline(&mut self, key: &[u8]) {
        // Most stores expire nothing: skip the lookup (a tree walk with a key comparison per
        // level, a sixth of a SET's cost on a million keys) when no key has a deadline.
        if self.deadlines.is_empty() {
            return;
        }
        if let Some(Record {
            expires_at: Some(at),
            ..
        }) = self.records.get(key)
        {
            let removed = self
                .deadlines
                .remove_mut(&(*at, Bytes::copy_from_slice(key)));
            debug_assert!(removed, "invariant: every expiring key has its deadline");
        }
    }

    /// Sets or clears an existing key's expiry; `false` (and no change) if the key is absent.
    pub fn set_expiry(&mut self, key: &[u8], expires_at: Option<u64>) -> bool {
        let Some(record) = self.records.get(key) else {
            return false;
        };
        if record.expires_at == expires_at {
            return true;
        }
        let record = Record::new(record.value.clone(), expires_at);
        self.insert_record(Bytes::copy_from_slice(key), record);
        true
    }

    /// A key's expiry time, `None` if it never expires or is absent.
    #[must_use]
    pub fn expires_at(&self, key: &[u8]) -> Option<u64> {
        self.records.get(key).and_then(|record| record.expires_at)
    }

    /// The soonest expiry time of any key.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Removes every key whose expiry time is at or before `now`; how many.
    pub fn expire_due(&mut self, now: u64) -> usize {
        let mut expired = 0;
        while let Some((at, key)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.remove_mut(&(at, key.clone()));
            self.note(&key);
            self.records.remove_mut(&key);
            expired += 1;
        }
        expired
    }

    /// The number of keys.
    #[must_use]
    pub fn size(&self) -> usize {
        self.records.size()
    }

    /// The number of keys that expire.
    #[must_use]
    pub fn expiring(&self) -> usize {
        self.deadlines.size()
    }

    /// Whether there is no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The keys with their values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Value)> {
        self.records
            .iter()
            .map(|(key, record)| (key, &record.value))
    }

    /// The keys with their records, in key order.
    pub fn records(&self) -> impl Iterator<Item = (&Bytes, &Record)> {
        self.records.iter()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.records.keys()
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a Bytes, &'a Value);
    type IntoIter = Box<dyn Iterator<Item = (&'a Bytes, &'a Value)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn string(text: &str) -> Value {
        Value::String(b(text))
    }

    /// Proves the deadline index follows every way a record changes: an overwrite clears the
    /// expiry, a change of value keeps it, removal forgets it, and `expire_due` removes
    /// exactly the keys whose time has come, soonest first.
    #[test]
    fn deadlines_follow_the_records() {
        let mut map = Map::new_sync();
        map.insert_mut(b("a"), string("1"));
        map.insert_mut(b("b"), string("2"));
        map.insert_mut(b("c"), string("3"));
        assert!(map.set_expiry(b"a", Some(10)));
        assert!(map.set_expiry(b"b", Some(20)));
        assert!(!map.set_expiry(b"nothing", Some(5)));
        assert_eq!(map.next_deadline(), Some(10));
        map.replace_value(b("a"), string("1b"));
        assert_eq!(map.expires_at(b"a"), Some(10));
        map.insert_mut(b("a"), string("1c"));
        assert_eq!(map.expires_at(b"a"), None);
        assert_eq!(map.next_deadline(), Some(20));
        assert!(map.set_expiry(b"c", Some(15)));
        assert!(map.set_expiry(b"c", Some(30)));
        assert_eq!(map.expiring(), 2);
        assert!(map.remove_mut(b"b"));
        assert_eq!(map.next_deadline(), Some(30));
        assert_eq!(map.expire_due(29), 0);
        assert_eq!(map.expire_due(30), 1);
        assert!(!map.contains_key(b"c"));
        assert_eq!(map.expiring(), 0);
        assert_eq!(map.size(), 1);
        let copy = map.clone();
        map.set_index(7);
        map.insert_record(b("d"), Record::new(string("4"), Some(1)));
        assert_eq!(map.version(b"d"), 7);
        assert_eq!(map.version(b"a"), 0);
        assert_ne!(copy, map, "a clone does not see later writes");
        assert_eq!(map.expire_due(u64::MAX), 1);
        assert_eq!(copy, map);
    }
}

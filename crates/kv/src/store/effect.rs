//! The effect of one command on a [`KvStore`]: what passive replication ships to backups
//! instead of the command, and its byte layout.
//!
//! An effect is an after-image: for every key the command wrote or removed, the key's whole
//! stored record as a snapshot writes it (so whatever a record holds travels with it), and for
//! every session the command registered, used or expired, the session as the table holds it,
//! cached reply included (so a retry answered by a backup that became primary gets the
//! primary's answer: exactly-once survives the failover). Applying it sets those keys and
//! sessions and nothing else: a backup never executes the command, so the command may draw on
//! the primary's randomness or clock.
//!
//! Layout (version [`EFFECT_VERSION`]): the version byte; a flags byte (bit 0: the whole key
//! space was emptied first, as `FLUSHALL` does); the log clock after the command as a varint;
//! the number of keys as a varint, then each key in increasing order as a varint length and
//! its bytes, and a presence byte (0 removed, 1 present) followed for a present key by its
//! record as the snapshot writes it (the expiry time plus one or 0, the version, then the
//! value: a type tag and the value's records); the number of sessions, then each in increasing client order as its
//! client id, a presence byte and, if present, the varint length and postcard encoding of the
//! session; then the number of bound sessions, and each in increasing name order as a varint
//! length and the name's bytes, a presence byte and, if present, the varint length and
//! postcard encoding of the bound session. Nothing may follow.
//!
//! Version 1, written before bound sessions existed, is still applied: version 2 without
//! them.

use std::collections::BTreeSet;

use bytes::Bytes;
use chorus_core::{EffectError, LogIndex};

use super::{
    BoundSession, ImageReader, KvStore, Session, decode_bound_session, put_bytes, put_value,
    put_varint,
};
use crate::command::ClientId;
use crate::keyspace::{Record, Written};

/// The format version written in front of every effect.
pub const EFFECT_VERSION: u8 = 2;

/// The effect version before bound sessions, still applied.
const EFFECT_VERSION_NO_BOUND: u8 = 1;

const FLAG_CLEARED: u8 = 1;

/// An effect, decoded and checked, ready to apply.
pub(super) struct Decoded {
    pub(super) cleared: bool,
    pub(super) clock_ms: u64,
    pub(super) keys: Vec<(Bytes, Option<Record>)>,
    pub(super) sessions: Vec<(ClientId, Option<Session>)>,
    pub(super) bound: Vec<(Bytes, Option<BoundSession>)>,
}

impl KvStore {
    /// The after-images of `written` keys and `sessions`, as they stand now.
    pub(super) fn encode_effect(
        &self,
        written: &Written,
        sessions: &BTreeSet<ClientId>,
        bound: &BTreeSet<Bytes>,
    ) -> Bytes {
        let mut out = vec![EFFECT_VERSION, u8::from(written.cleared) * FLAG_CLEARED];
        put_varint(&mut out, self.clock_ms);
        put_varint(&mut out, written.keys.len() as u64);
        for key in &written.keys {
            put_bytes(&mut out, key);
            match self.data.record(key) {
                None => out.push(0),
                Some(record) => {
                    out.push(1);
                    put_varint(
                        &mut out,
                        record.expires_at.map_or(0, |at| at.saturating_add(1)),
                    );
                    put_varint(&mut out, record.version);
                    put_value(&mut out, &record.value);
                }
            }
        }
        put_varint(&mut out, sessions.len() as u64);
        for client in sessions {
            put_varint(&mut out, client.0);
            match self.sessions.get(client) {
                None => out.push(0),
                Some(session) => {
                    out.push(1);
                    let encoded = postcard::to_allocvec(session)
                        .expect("invariant: a session always encodes");
                    put_bytes(&mut out, &encoded);
                }
            }
        }
        put_varint(&mut out, bound.len() as u64);
        for name in bound {
            put_bytes(&mut out, name);
            match self.bound.get(name) {
                None => out.push(0),
                Some(session) => {
                    out.push(1);
                    let encoded = postcard::to_allocvec(session)
                        .expect("invariant: a bound session always encodes");
                    put_bytes(&mut out, &encoded);
                }
            }
        }
        Bytes::from(out)
    }
}

fn refused(reason: impl std::fmt::Display) -> EffectError {
    EffectError {
        reason: format!("key-value effect: {reason}"),
    }
}

/// Decodes an effect to apply at `index`, refusing anything `encode_effect` could not have
/// written: an unknown version or flag, keys or sessions out of order, an empty collection, a
/// session in a non-canonical encoding or used after `index`, trailing bytes.
pub(super) fn decode(effect: &[u8], index: LogIndex) -> Result<Decoded, EffectError> {
    let mut input = effect;
    let mut reader = ImageReader { input: &mut input };
    let version = reader.byte().map_err(|e| refused(e.reason))?;
    if version != EFFECT_VERSION && version != EFFECT_VERSION_NO_BOUND {
        return Err(refused(format!(
            "version {version} is neither {EFFECT_VERSION} nor {EFFECT_VERSION_NO_BOUND}"
        )));
    }
    let flags = reader.byte().map_err(|e| refused(e.reason))?;
    if flags & !FLAG_CLEARED != 0 {
        return Err(refused(format!("unknown flags {flags:#x}")));
    }
    let clock_ms = reader.varint().map_err(|e| refused(e.reason))?;
    let mut keys: Vec<(Bytes, Option<Record>)> = Vec::new();
    for _ in 0..reader.varint().map_err(|e| refused(e.reason))? {
        let key = Bytes::from(reader.bytes().map_err(|e| refused(e.reason))?);
        if keys.last().is_some_and(|(previous, _)| *previous >= key) {
            return Err(refused("keys are not strictly increasing"));
        }
        let value = match reader.byte().map_err(|e| refused(e.reason))? {
            0 => None,
            1 => {
                let expires_at = match reader.varint().map_err(|e| refused(e.reason))? {
                    0 => None,
                    stored if stored - 1 > i64::MAX as u64 => {
                        return Err(refused("an expiry time beyond i64::MAX"));
                    }
                    stored => Some(stored - 1),
                };
                let version = reader.varint().map_err(|e| refused(e.reason))?;
                if version > index.0 {
                    return Err(refused("a key written after the effect's index"));
                }
                let value = reader.value().map_err(|e| refused(e.reason))?;
                Some(Record {
                    value,
                    expires_at,
                    version,
                })
            }
            other => return Err(refused(format!("presence byte {other}"))),
        };
        keys.push((key, value));
    }
    let mut sessions: Vec<(ClientId, Option<Session>)> = Vec::new();
    for _ in 0..reader.varint().map_err(|e| refused(e.reason))? {
        let client = ClientId(reader.varint().map_err(|e| refused(e.reason))?);
        if sessions
            .last()
            .is_some_and(|(previous, _)| *previous >= client)
        {
            return Err(refused("sessions are not strictly increasing"));
        }
        let session = match reader.byte().map_err(|e| refused(e.reason))? {
            0 => None,
            1 => {
                let encoded = reader.bytes().map_err(|e| refused(e.reason))?;
                let session: Session = postcard::from_bytes(&encoded)
                    .map_err(|error| refused(format!("a session does not decode: {error}")))?;
                if postcard::to_allocvec(&session).ok().as_deref() != Some(encoded.as_slice()) {
                    return Err(refused("a session is not in canonical form"));
                }
                if session.last_used > index || session.last_used.0 < client.0 {
                    return Err(refused("a session's last use is outside its lifetime"));
                }
                if (session.last_seq == 0) != session.last_response.is_none() {
                    return Err(refused(
                        "a session's cached response does not match its seq",
                    ));
                }
                Some(session)
            }
            other => return Err(refused(format!("presence byte {other}"))),
        };
        sessions.push((client, session));
    }
    let mut bound: Vec<(Bytes, Option<BoundSession>)> = Vec::new();
    if version == EFFECT_VERSION {
        for _ in 0..reader.varint().map_err(|e| refused(e.reason))? {
            let name = Bytes::from(reader.bytes().map_err(|e| refused(e.reason))?);
            if bound.last().is_some_and(|(previous, _)| *previous >= name) {
                return Err(refused("bound sessions are not strictly increasing"));
            }
            let session = match reader.byte().map_err(|e| refused(e.reason))? {
                0 => None,
                1 => {
                    let encoded = reader.bytes().map_err(|e| refused(e.reason))?;
                    Some(decode_bound_session(&name, &encoded, index).map_err(refused)?)
                }
                other => return Err(refused(format!("presence byte {other}"))),
            };
            bound.push((name, session));
        }
    }
    reader.end().map_err(|e| refused(e.reason))?;
    Ok(Decoded {
        cleared: flags & FLAG_CLEARED != 0,
        clock_ms,
        keys,
        sessions,
        bound,
    })
}

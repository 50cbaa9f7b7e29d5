//! The byte encoding of [`Command`], [`Query`] and [`Response`].
//!
//! Protocol cores and the network move these values as opaque bytes, so every replica, client
//! and tool must agree on one encoding, and every decoder must survive hostile input: bytes
//! arrive from clients, peers and disks that may be buggy, corrupted or malicious.
//!
//! The format is one version byte ([`CODEC_VERSION`]) followed by the value in postcard, which is
//! compact and deterministic (the same value always encodes to the same bytes). The version byte
//! lets the format evolve: a decoder refuses a version it does not know instead of misreading
//! it.
//!
//! Invariants of every decoder here:
//! - it returns [`DecodeError`] instead of panicking, whatever the input;
//! - it consumes the whole input: trailing bytes are an error, because they mean the sender and
//!   the receiver disagree about the format;
//! - it never allocates much more than the input's length, because postcard checks each length
//!   prefix against the bytes that remain before trusting it.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::{Command, DecodeError, Query, Response};

/// The format version written in front of every encoded [`Command`], [`Query`] and
/// [`Response`]. Decoders refuse any other version.
pub const CODEC_VERSION: u8 = 1;

/// Encodes `value` as `version` followed by its postcard bytes.
pub(crate) fn encode_versioned<T: Serialize>(version: u8, value: &T) -> Bytes {
    const INVARIANT: &str =
        "invariant: postcard serializes every type of this crate (no unsized sequences)";
    // Sized first, then written straight into a buffer of exactly that size that already
    // holds the version byte: one allocation, where a buffer grown from empty is moved and
    // copied several times for a 100-byte value (`kv_codec` in benches/codec.rs).
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect(INVARIANT);
    let mut buffer = Vec::with_capacity(1 + size);
    buffer.push(version);
    let buffer = postcard::to_extend(value, buffer).expect(INVARIANT);
    Bytes::from(buffer)
}

/// Decodes bytes written by [`encode_versioned`] with the same `version`.
///
/// # Errors
/// [`DecodeError`] naming `what` when the input is empty, carries another version, does not
/// decode, or has bytes left over after the value.
pub(crate) fn decode_versioned<T: DeserializeOwned>(
    what: &'static str,
    version: u8,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let error = |reason: String| DecodeError { what, reason };
    let Some((&found_version, body)) = bytes.split_first() else {
        return Err(error("empty input".to_owned()));
    };
    if found_version != version {
        return Err(error(format!(
            "unknown format version {found_version} (expected {version})"
        )));
    }
    // `take_from_bytes` rather than `from_bytes`, because only it reports what is left over.
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|e| error(e.to_string()))?;
    if !rest.is_empty() {
        return Err(error(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

impl Command {
    /// Encodes the command for the log: [`CODEC_VERSION`], then postcard.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        encode_versioned(CODEC_VERSION, self)
    }

    /// Decodes bytes written by [`Command::encode`].
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are empty, carry an unknown version, do not decode to a
    /// command, or have trailing bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        decode_versioned("command", CODEC_VERSION, bytes)
    }
}

impl Query {
    /// Encodes the query: [`CODEC_VERSION`], then postcard.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        encode_versioned(CODEC_VERSION, self)
    }

    /// Decodes bytes written by [`Query::encode`].
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are empty, carry an unknown version, do not decode to a
    /// query, or have trailing bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Query, DecodeError> {
        decode_versioned("query", CODEC_VERSION, bytes)
    }
}

impl Response {
    /// Encodes the response: [`CODEC_VERSION`], then postcard.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        encode_versioned(CODEC_VERSION, self)
    }

    /// Decodes bytes written by [`Response::encode`].
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are empty, carry an unknown version, do not decode to a
    /// response, or have trailing bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        decode_versioned("response", CODEC_VERSION, bytes)
    }
}

#[cfg(test)]
mod tests {
    use chorus_core::Prng;

    use super::*;
    use crate::command::{ClientId, KvError, Op};

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn sample_ops() -> Vec<Op> {
        vec![
            Op::Get { key: b("k") },
            Op::Put {
                key: b("k"),
                value: b("v"),
            },
            Op::Delete { key: b("") },
            Op::Append {
                key: b("k"),
                value: b("suffix"),
            },
            Op::Cas {
                key: b("k"),
                from: b("a"),
                to: b("b"),
            },
            Op::IncrBy {
                key: b("n"),
                delta: i64::MIN,
            },
            Op::MultiPut {
                pairs: vec![(b("a"), b("1")), (b("b"), Bytes::from(vec![0xff; 300]))],
            },
        ]
    }

    fn sample_commands() -> Vec<Command> {
        let mut commands = vec![Command::Register];
        for (number, op) in sample_ops().into_iter().enumerate() {
            commands.push(Command::Unsessioned(op.clone()));
            commands.push(Command::Request {
                client: ClientId(u64::MAX - number as u64),
                seq: number as u64 + 1,
                op,
            });
        }
        commands
    }

    fn sample_queries() -> Vec<Query> {
        vec![
            Query::Get { key: b("k") },
            Query::MultiGet {
                keys: vec![b("a"), b(""), b("c")],
            },
            Query::MultiGet { keys: vec![] },
            Query::Len,
        ]
    }

    fn sample_responses() -> Vec<Response> {
        vec![
            Response::Ok,
            Response::Value(None),
            Response::Value(Some(b("v"))),
            Response::Values(vec![Some(b("x")), None]),
            Response::Deleted(true),
            Response::Length(u64::MAX),
            Response::Swapped(false),
            Response::Integer(-42),
            Response::Registered(ClientId(7)),
            Response::Error(KvError::UnknownSession),
            Response::Error(KvError::StaleRequest),
            Response::Error(KvError::NotAnInteger),
            Response::Error(KvError::Overflow),
            Response::Error(KvError::Malformed),
        ]
    }

    /// Proves every value survives encode → decode unchanged, and starts with the version byte.
    #[test]
    fn every_value_round_trips() {
        for command in sample_commands() {
            let bytes = command.encode();
            assert_eq!(bytes[0], CODEC_VERSION);
            assert_eq!(Command::decode(&bytes), Ok(command));
        }
        for query in sample_queries() {
            assert_eq!(Query::decode(&query.encode()), Ok(query));
        }
        for response in sample_responses() {
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
    }

    /// Proves the encoding is deterministic: equal values give equal bytes.
    #[test]
    fn encoding_is_deterministic() {
        for command in sample_commands() {
            assert_eq!(command.encode(), command.clone().encode());
        }
    }

    /// Proves an unknown version is refused even when the rest would decode.
    #[test]
    fn unknown_version_is_refused() {
        for command in sample_commands() {
            let mut bytes = command.encode().to_vec();
            bytes[0] = CODEC_VERSION.wrapping_add(1);
            let error = Command::decode(&bytes).expect_err("unknown version must be refused");
            assert_eq!(error.what, "command");
            assert!(error.reason.contains("version"), "{error}");
        }
        assert!(Query::decode(&[0, 2]).is_err());
        assert!(Response::decode(&[0xff, 0]).is_err());
    }

    /// Proves empty input, every strict prefix, and trailing bytes are refused.
    #[test]
    fn truncated_and_trailing_bytes_are_refused() {
        assert!(Command::decode(&[]).is_err());
        assert!(Query::decode(&[]).is_err());
        assert!(Response::decode(&[]).is_err());
        for command in sample_commands() {
            let bytes = command.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Command::decode(&bytes[..cut]).is_err(),
                    "prefix {cut} of {command:?} decoded"
                );
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            let error = Command::decode(&longer).expect_err("trailing byte must be refused");
            assert!(error.reason.contains("trailing"), "{error}");
        }
        for query in sample_queries() {
            let mut longer = query.encode().to_vec();
            longer.extend_from_slice(&[1, 2, 3]);
            assert!(Query::decode(&longer).is_err());
        }
        for response in sample_responses() {
            let mut longer = response.encode().to_vec();
            longer.push(0);
            assert!(Response::decode(&longer).is_err());
        }
    }

    /// Proves a length prefix far larger than the input is refused, not trusted (no huge
    /// allocation, no panic).
    #[test]
    fn huge_length_prefix_is_refused() {
        // Version, `Unsessioned`, `MultiPut`, then a varint claiming about 2^63 pairs.
        let mut bytes = vec![CODEC_VERSION, 2, 6];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(Command::decode(&bytes).is_err());
    }

    /// Proves the decoders never panic on random bytes, with and without a valid version byte,
    /// and that whatever they accept re-encodes to the same bytes' meaning.
    #[test]
    fn random_bytes_never_panic() {
        let mut prng = Prng::new(0x5eed);
        for round in 0..20_000 {
            let len = prng.index(24);
            let mut bytes: Vec<u8> = (0..len).map(|_| prng.next_u64() as u8).collect();
            if round % 2 == 0 && !bytes.is_empty() {
                bytes[0] = CODEC_VERSION;
            }
            if let Ok(command) = Command::decode(&bytes) {
                assert_eq!(Command::decode(&command.encode()), Ok(command));
            }
            if let Ok(query) = Query::decode(&bytes) {
                assert_eq!(Query::decode(&query.encode()), Ok(query));
            }
            if let Ok(response) = Response::decode(&bytes) {
                assert_eq!(Response::decode(&response.encode()), Ok(response));
            }
        }
    }

    /// Proves flipping any single byte of a valid encoding never panics the decoder.
    #[test]
    fn corrupted_encodings_never_panic() {
        for command in sample_commands() {
            let bytes = command.encode();
            for position in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut corrupted = bytes.to_vec();
                    corrupted[position] ^= flip;
                    let _ = Command::decode(&corrupted);
                }
            }
        }
    }
}

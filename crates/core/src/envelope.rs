//! The envelope a driver wraps around each client command before proposing it.
//!
//! Protocol cores treat commands as opaque bytes, and a follower forwards proposals to the
//! leader, so the node that took a client's request does not learn the log index its command
//! lands at. The envelope carries the origin node and a request number chosen by that node:
//! when any node applies the entry it unwraps the command for the state machine, and the origin
//! recognises its own request and answers its client. Request numbers must not repeat across a
//! node's restarts (drivers put an incarnation number in the high bits).
//!
//! Layout: a version byte, the origin node id (8 bytes, big endian), the request number
//! (8 bytes, big endian), then the command.

use bytes::{BufMut, Bytes, BytesMut};

use crate::NodeId;

const VERSION: u8 = 1;
const HEADER_BYTES: usize = 17;

/// A command together with who proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The node that took the client's request.
    pub origin: NodeId,
    /// The request's number at that node.
    pub request: u64,
    /// The command for the state machine.
    pub command: Bytes,
}

/// The bytes are not an envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than the header needs.
    #[error("envelope too short: {0} bytes")]
    TooShort(usize),
    /// A version this build does not know.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
}

impl Envelope {
    /// Encodes the envelope.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_BYTES + self.command.len());
        out.put_u8(VERSION);
        out.put_u64(self.origin.0);
        out.put_u64(self.request);
        out.put_slice(&self.command);
        out.freeze()
    }

    /// Decodes an envelope; the command shares `bytes`' buffer.
    ///
    /// # Errors
    /// [`EnvelopeError`] if the bytes are too short or of an unknown version.
    pub fn decode(bytes: &Bytes) -> Result<Envelope, EnvelopeError> {
        if bytes.len() < HEADER_BYTES {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        if bytes[0] != VERSION {
            return Err(EnvelopeError::UnknownVersion(bytes[0]));
        }
        let mut origin = [0u8; 8];
        origin.copy_from_slice(&bytes[1..9]);
        let mut request = [0u8; 8];
        request.copy_from_slice(&bytes[9..17]);
        Ok(Envelope {
            origin: NodeId(u64::from_be_bytes(origin)),
            request: u64::from_be_bytes(request),
            command: bytes.slice(HEADER_BYTES..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let envelope = Envelope {
            origin: NodeId(3),
            request: (7 << 32) | 9,
            command: Bytes::from_static(b"put x 1"),
        };
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    }

    #[test]
    fn rejects_short_and_foreign_bytes() {
        assert_eq!(
            Envelope::decode(&Bytes::from_static(b"abc")),
            Err(EnvelopeError::TooShort(3))
        );
        let mut bytes = vec![9u8];
        bytes.extend([0u8; 16]);
        assert_eq!(
            Envelope::decode(&Bytes::from(bytes)),
            Err(EnvelopeError::UnknownVersion(9))
        );
    }
}

//! Fuzzes the envelope and the origin-session table: arbitrary bytes never panic
//! `Envelope::decode` or `OriginSessions::decode`; whatever either accepts re-encodes to
//! exactly the input (each has one encoding); and admitting decoded envelopes into a decoded
//! table never panics and keeps the table encodable.

#![no_main]

use bytes::Bytes;
use chorus_core::envelope::{Envelope, OriginSessions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(envelope) = Envelope::decode(&bytes) {
        assert_eq!(
            envelope.encode(),
            bytes,
            "an accepted envelope must re-encode to its input"
        );
    }
    if let Ok(mut table) = OriginSessions::decode(data) {
        assert_eq!(
            table.encode(),
            bytes,
            "an accepted table must re-encode to its input"
        );
        // Envelopes cut from the same bytes, admitted in order.
        for chunk in data.chunks(41) {
            if let Ok(envelope) = Envelope::decode(&Bytes::copy_from_slice(chunk)) {
                table.admit(&envelope);
            }
        }
        let encoded = table.encode();
        assert_eq!(OriginSessions::decode(&encoded), Ok(table));
    }
});

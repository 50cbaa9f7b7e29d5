//! Fuzzes `Envelope::decode`: arbitrary bytes never panic it, and whatever it accepts
//! re-encodes to exactly the input.

#![no_main]

use bytes::Bytes;
use chorus_core::envelope::Envelope;
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
});

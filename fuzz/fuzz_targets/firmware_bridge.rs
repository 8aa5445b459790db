//! Arbitrary bytes into the firmware-bridge frame decoder (no_std, in-place COBS) and into the
//! daemon's bridge decoder built on it; a decoded frame must re-encode to a frame that decodes
//! to the same value.
#![no_main]

use firmware_bridge::{FrameDecoder, MAX_WIRE_FRAME_LEN, encode};
use libfuzzer_sys::fuzz_target;
use meit::acquire::{WireDecoder, bridge::BridgeDecoder};

fuzz_target!(|data: &[u8]| {
    let mut decoder: FrameDecoder = FrameDecoder::new();
    for &b in data {
        if let Some(Ok(frame)) = decoder.push(b) {
            let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
            let n = encode(&frame, &mut wire).expect("a decoded frame fits the wire buffer");
            let mut again: FrameDecoder = FrameDecoder::new();
            let mut matched = false;
            for &w in &wire[..n] {
                if let Some(r) = again.push(w) {
                    assert_eq!(r.as_ref().ok(), Some(&frame), "re-encoded frame differs");
                    matched = true;
                }
            }
            assert!(matched, "re-encoded frame did not decode");
        }
    }
    let mut out = Vec::new();
    BridgeDecoder::new().feed(data, &mut out);
});

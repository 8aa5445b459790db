//! Arbitrary bytes, split at an arbitrary point, into the OpenBCI Cyton decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meit::acquire::{WireDecoder, cyton::CytonDecoder};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut out = Vec::new();
    let mut d = CytonDecoder::default();
    d.feed(&data[..split], &mut out);
    d.feed(&data[split..], &mut out);
});

//! Arbitrary bytes as a Polar PMD notification and as a control-point response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meit::acquire::WireDecoder;
use meit::acquire::pmd::{PmdDecoder, parse_control_response, parse_ecg_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = parse_ecg_frame(data) {
        assert_eq!(frame.samples_uv.len(), (data.len() - 10) / 3);
        assert!(frame.first_sample_ns <= frame.last_sample_ns);
    }
    let _ = parse_control_response(data);
    let mut out = Vec::new();
    PmdDecoder::default().feed(data, &mut out);
});

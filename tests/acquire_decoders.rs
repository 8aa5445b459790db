//! Every serial/BLE decoder survives arbitrary bytes: no panic, bounded output, and packets
//! that follow the garbage are still decoded.

use meit::acquire::cyton::{self, CytonDecoder};
use meit::acquire::openview::{self, OpenViewDecoder, OpenViewLayout};
use meit::acquire::pmd::{self, PmdDecoder};
use meit::acquire::{Decoded, WireDecoder, bridge::BridgeDecoder};
use proptest::prelude::*;

fn decoders() -> Vec<(&'static str, Box<dyn WireDecoder>)> {
    vec![
        ("bridge", Box::new(BridgeDecoder::new())),
        ("cyton", Box::new(CytonDecoder::default())),
        (
            "openview",
            Box::new(OpenViewDecoder::new(OpenViewLayout::default())),
        ),
        ("pmd", Box::new(PmdDecoder::default())),
    ]
}

fn block_count(out: &[Decoded]) -> usize {
    out.iter()
        .filter(|d| matches!(d, Decoded::Block(_)))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_chunks_never_panic_any_decoder(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)
    ) {
        for (_, mut d) in decoders() {
            let mut out = Vec::new();
            for c in &chunks {
                d.feed(c, &mut out);
            }
            d.reset();
            d.feed(&[], &mut out);
        }
    }

    #[test]
    fn stream_decoders_recover_after_garbage(
        garbage in prop::collection::vec(any::<u8>(), 0..300),
        counts in prop::array::uniform8(-(1i32 << 23)..(1 << 23)),
    ) {
        // Garbage may swallow at most the first packet after it (a false header whose
        // length reaches into it); the second and third must come through.
        let mut c = CytonDecoder::default();
        let mut out = Vec::new();
        c.feed(&garbage, &mut out);
        for n in 0..3 {
            c.feed(&cyton::encode_packet(n, &counts, 0), &mut out);
        }
        prop_assert!(block_count(&out) >= 2);

        let mut o = OpenViewDecoder::new(OpenViewLayout::default());
        let mut out = Vec::new();
        o.feed(&garbage, &mut out);
        let payload: Vec<u8> = counts[..3].iter().flat_map(|v| v.to_le_bytes()).collect();
        for _ in 0..3 {
            o.feed(&openview::encode_packet(&payload), &mut out);
        }
        prop_assert!(block_count(&out) >= 2);
    }

    #[test]
    fn pmd_frames_round_trip(ts in any::<u64>(), samples in prop::collection::vec(-(1i32 << 23)..(1 << 23), 1..80)) {
        let frame = pmd::parse_ecg_frame(&pmd::encode_ecg_frame(ts, &samples)).unwrap();
        prop_assert_eq!(frame.samples_uv, samples.iter().map(|&s| s as f32).collect::<Vec<_>>());
        prop_assert_eq!(frame.last_sample_ns, ts);
    }
}

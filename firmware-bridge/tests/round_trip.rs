//! Property tests: every frame survives encode -> decode, arbitrary bytes never panic the
//! decoder, and corrupted frames are rejected while the stream resynchronises at the next one.

use firmware_bridge::{
    Ack, AckResult, Command, CommandKind, DecodeError, Frame, FrameDecoder, Hello, MAX_LEADS,
    MAX_WIRE_FRAME_LEN, Samples, Status, encode, pack_i24,
};
use proptest::prelude::*;

/// An owned frame description, so proptest can generate sample data the frame borrows.
#[derive(Debug, Clone)]
enum Spec {
    Hello(Hello),
    Samples {
        sequence: u32,
        time: u64,
        leads: u8,
        counts: Vec<i32>,
    },
    Status(Status),
    Command(Command),
    Ack(Ack),
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        prop::array::uniform16(1u8..128),
        1u32..=32_000,
        Just(()).prop_perturb(|_, mut rng| {
            let mut codes: Vec<u8> = (0..MAX_LEADS as u8).collect();
            let n = rng.random_range(1..=MAX_LEADS);
            for i in 0..n {
                let j = rng.random_range(i..MAX_LEADS);
                codes.swap(i, j);
            }
            codes.truncate(n);
            codes
        }),
        1e-3f32..100.0,
        prop::array::uniform3(any::<u8>()),
    )
        .prop_map(|(serial, rate, codes, uv, fw)| {
            let mut leads = [0xFF; MAX_LEADS];
            leads[..codes.len()].copy_from_slice(&codes);
            Hello {
                serial,
                sample_rate_hz: rate,
                lead_count: codes.len() as u8,
                leads,
                uv_per_count: uv,
                firmware_version: fw,
            }
        })
}

fn command_kind() -> impl Strategy<Value = CommandKind> {
    prop_oneof![
        Just(CommandKind::Start),
        Just(CommandKind::Stop),
        any::<u32>().prop_map(CommandKind::SetRate),
        any::<u32>().prop_map(CommandKind::Ping),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let samples = (any::<u32>(), any::<u64>(), 1u8..=12, 1usize..=32).prop_flat_map(
        |(sequence, time, leads, frames)| {
            prop::collection::vec(-(1 << 23)..(1i32 << 23), leads as usize * frames).prop_map(
                move |counts| Spec::Samples {
                    sequence,
                    time,
                    leads,
                    counts,
                },
            )
        },
    );
    prop_oneof![
        hello().prop_map(Spec::Hello),
        samples,
        (
            any::<u16>(),
            prop_oneof![0u8..=100, Just(255)],
            any::<u16>()
        )
            .prop_map(|(lead_off, battery_percent, errors)| Spec::Status(Status {
                lead_off,
                battery_percent,
                errors
            })),
        (any::<u8>(), command_kind())
            .prop_map(|(token, kind)| Spec::Command(Command { token, kind })),
        (
            any::<u8>(),
            any::<u8>(),
            prop_oneof![
                Just(AckResult::Ok),
                Just(AckResult::Unsupported),
                Just(AckResult::InvalidArgument),
                Just(AckResult::Busy)
            ],
            any::<u32>()
        )
            .prop_map(|(token, command, result, value)| Spec::Ack(Ack {
                token,
                command,
                result,
                value
            })),
    ]
}

/// Encodes `spec` and returns the wire bytes.
fn wire(spec: &Spec) -> Vec<u8> {
    let mut packed = vec![0u8; 3 * 12 * 32];
    let frame = match spec {
        Spec::Hello(h) => Frame::Hello(*h),
        Spec::Samples {
            sequence,
            time,
            leads,
            counts,
        } => {
            let n = pack_i24(counts, &mut packed).unwrap();
            Frame::Samples(Samples::new(*sequence, *time, *leads, &packed[..n]).unwrap())
        }
        Spec::Status(s) => Frame::Status(*s),
        Spec::Command(c) => Frame::Command(*c),
        Spec::Ack(a) => Frame::Ack(*a),
    };
    let mut out = vec![0u8; MAX_WIRE_FRAME_LEN];
    let n = encode(&frame, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Asserts a decoded frame equals what `spec` described.
fn assert_matches(frame: &Frame<'_>, spec: &Spec) {
    match (frame, spec) {
        (Frame::Hello(a), Spec::Hello(b)) => assert_eq!(a, b),
        (
            Frame::Samples(s),
            Spec::Samples {
                sequence,
                time,
                leads,
                counts,
            },
        ) => {
            assert_eq!(
                (s.sequence, s.device_time_ns, s.lead_count),
                (*sequence, *time, *leads)
            );
            assert_eq!(s.iter().collect::<Vec<_>>(), *counts);
            assert_eq!(s.frame_count(), counts.len() / *leads as usize);
        }
        (Frame::Status(a), Spec::Status(b)) => assert_eq!(a, b),
        (Frame::Command(a), Spec::Command(b)) => assert_eq!(a, b),
        (Frame::Ack(a), Spec::Ack(b)) => assert_eq!(a, b),
        (got, want) => panic!("decoded {got:?}, expected {want:?}"),
    }
}

/// Feeds `bytes` and returns (frames matched in order against `specs`, errors seen).
fn decode_all(bytes: &[u8], specs: &[&Spec]) -> (usize, Vec<DecodeError>) {
    let mut decoder: FrameDecoder = FrameDecoder::new();
    let (mut matched, mut errors) = (0, Vec::new());
    for &b in bytes {
        match decoder.push(b) {
            Some(Ok(frame)) => {
                assert_matches(&frame, specs[matched]);
                matched += 1;
            }
            Some(Err(e)) => errors.push(e),
            None => {}
        }
    }
    (matched, errors)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_frame_round_trips(specs in prop::collection::vec(spec(), 1..8)) {
        let bytes: Vec<u8> = specs.iter().flat_map(wire).collect();
        let refs: Vec<&Spec> = specs.iter().collect();
        let (matched, errors) = decode_all(&bytes, &refs);
        prop_assert_eq!(matched, specs.len());
        prop_assert!(errors.is_empty(), "{:?}", errors);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut decoder: FrameDecoder = FrameDecoder::new();
        for &b in &bytes {
            let _ = decoder.push(b);
        }
    }

    #[test]
    fn a_corrupted_frame_is_rejected_and_the_next_one_decodes(
        first in spec(),
        second in spec(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = wire(&first);
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        bytes.extend(wire(&second));
        let mut decoder: FrameDecoder = FrameDecoder::new();
        let mut outcomes = Vec::new();
        for &b in &bytes {
            if let Some(r) = decoder.push(b) {
                outcomes.push(r.map(|f| f.frame_type()).map_err(|_| ()));
            }
        }
        // The corrupted frame never decodes as valid data (a flipped delimiter may split it
        // into several rejected pieces), and the following frame is always delivered intact.
        let last = outcomes.pop().expect("the second frame");
        prop_assert!(last.is_ok(), "second frame lost: {:?}", outcomes);
        prop_assert!(outcomes.iter().all(|o| o.is_err()), "corruption accepted: {:?}", outcomes);
    }
}

#[test]
fn wrong_version_and_impossible_fields_are_named_errors() {
    let hello = Hello {
        serial: *b"MEIT-0001\0\0\0\0\0\0\0",
        sample_rate_hz: 500,
        lead_count: 12,
        leads: core::array::from_fn(|i| i as u8),
        uv_per_count: 0.5,
        firmware_version: [1, 0, 0],
    };
    let mut cases: Vec<(Hello, DecodeError)> = vec![
        (
            Hello {
                sample_rate_hz: 0,
                ..hello
            },
            DecodeError::SampleRate { hz: 0 },
        ),
        (
            Hello {
                lead_count: 13,
                ..hello
            },
            DecodeError::LeadCount { count: 13 },
        ),
    ];
    // Not a number, not positive, or so large that a full-scale count is an infinite f32.
    for uv_per_count in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.5,
        1e30,
        f32::MAX,
        f32::MIN_POSITIVE,
    ] {
        let bad = Hello {
            uv_per_count,
            ..hello
        };
        let expected = DecodeError::InvalidField {
            field: "hello.uv_per_count",
        };
        cases.push((bad, expected));
    }
    for (bad, expected) in cases {
        let mut out = [0u8; MAX_WIRE_FRAME_LEN];
        let n = encode(&Frame::Hello(bad), &mut out).unwrap();
        let (_, errors) = decode_all(&out[..n], &[]);
        assert_eq!(errors, vec![expected]);
    }
    // A version-2 frame: re-encode the raw bytes with another version byte and a valid CRC.
    let mut raw = vec![2u8, 0x10, 7, 1, 0, 0, 0, 0];
    let crc = firmware_bridge::crc::Crc32::checksum(&raw);
    raw.extend(crc.to_le_bytes());
    let mut out = [0u8; 64];
    let mut w = firmware_bridge::cobs::CobsWriter::new(&mut out).unwrap();
    w.extend(&raw).unwrap();
    let n = w.finish().unwrap();
    let (_, errors) = decode_all(&out[..n], &[]);
    assert_eq!(errors, vec![DecodeError::UnsupportedVersion { found: 2 }]);
}

#[test]
fn an_endless_run_without_delimiter_is_one_oversize_error() {
    let mut bytes = vec![0x42u8; 3 * MAX_WIRE_FRAME_LEN];
    bytes.push(0);
    let (_, errors) = decode_all(&bytes, &[]);
    assert_eq!(errors, vec![DecodeError::Oversize]);
}

//! Round trips, frozen handshake encodings, decoder edge cases, and a bounded
//! in-process fuzz run (the libFuzzer target `tests/fuzz` `node_proto` goes deeper).

use alloc::vec;
use alloc::vec::Vec;

use crate::frame::{HEADER_LEN, decode_body};
use crate::*;

fn frames<M: Message>(msgs: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        encode_frame_into(m, &mut out, MAX_FRAME).unwrap();
    }
    out
}

fn decode_all<M: Message>(
    bytes: &[u8],
    chunk: usize,
    max: usize,
) -> (Vec<Result<M, FrameError>>, FrameDecoder<M>) {
    let mut dec = FrameDecoder::<M>::new(max);
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        let mut input = piece;
        while let Some(r) = dec.push(&mut input) {
            out.push(r);
        }
        assert!(input.is_empty());
    }
    (out, dec)
}

fn roundtrip<M: Message + core::fmt::Debug + PartialEq + Clone>(msgs: Vec<M>) {
    for (i, m) in msgs.iter().enumerate() {
        let f = encode_frame(m, MAX_FRAME).unwrap();
        // Sample i is variant i: the samples cover every variant, in order.
        assert_eq!(f[HEADER_LEN] as usize, i, "{m:?}");
        let (back, used) = decode_frame::<M>(&f, MAX_FRAME).unwrap();
        assert_eq!(used, f.len());
        assert_eq!(&back, m);
    }
    assert_eq!(
        msgs.len() as u32,
        M::VARIANTS,
        "samples must cover every variant"
    );
    let all = frames(&msgs);
    for chunk in [1, 3, 7, 64, all.len()] {
        let (got, dec) = decode_all::<M>(&all, chunk, MAX_FRAME);
        let got: Vec<M> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, msgs, "chunk {chunk}");
        assert!(dec.is_idle());
        assert_eq!(dec.finish(), Ok(()));
    }
}

#[test]
fn every_message_round_trips() {
    roundtrip(sample::node_to_plane());
    roundtrip(sample::plane_to_node());
}

#[test]
fn every_tunnel_frame_round_trips_both_ways() {
    for frame in sample::tunnel_frames() {
        let up = NodeToPlane::Tunnel {
            tunnel: u32::MAX,
            frame: frame.clone(),
        };
        let f = encode_frame(&up, MAX_FRAME).unwrap();
        assert_eq!(decode_frame::<NodeToPlane>(&f, MAX_FRAME).unwrap().0, up);
        let down = PlaneToNode::Tunnel { tunnel: 0, frame };
        let f = encode_frame(&down, MAX_FRAME).unwrap();
        assert_eq!(decode_frame::<PlaneToNode>(&f, MAX_FRAME).unwrap().0, down);
    }
    // A full data chunk fits a frame with room to spare.
    let full = PlaneToNode::Tunnel {
        tunnel: 1,
        frame: TunnelFrame::Data(vec![0xff; MAX_TUNNEL_CHUNK]),
    };
    assert!(encode_frame(&full, MAX_TUNNEL_CHUNK + 64).is_ok());
}

/// The handshake is frozen forever (crate docs, rule 1): these bytes must
/// never change, whatever the protocol version.
#[test]
fn handshake_encoding_is_frozen() {
    let hello = NodeToPlane::Hello(Hello {
        min_version: 1,
        max_version: 2,
        node_name: "n".into(),
        capabilities: Capabilities(5),
        software: "s".into(),
    });
    assert_eq!(
        encode_frame(&hello, MAX_FRAME).unwrap(),
        [0, 0, 0, 8, 0, 1, 2, 1, b'n', 5, 1, b's']
    );
    let welcome = PlaneToNode::Welcome(Welcome {
        version: 1,
        capabilities: Capabilities(2),
        server_time: 300,
    });
    assert_eq!(
        encode_frame(&welcome, MAX_FRAME).unwrap(),
        [0, 0, 0, 5, 0, 1, 2, 0xac, 2]
    );
    let refused = PlaneToNode::Refused(Refusal {
        reason: RefusalReason::UnsupportedVersion { min: 3, max: 4 },
        message: "x".into(),
    });
    assert_eq!(
        encode_frame(&refused, MAX_FRAME).unwrap(),
        [0, 0, 0, 6, 1, 0, 3, 4, 1, b'x']
    );
}

#[test]
fn version_negotiation() {
    assert_eq!(negotiate(1, 1), None, "version 1 is not spoken");
    assert_eq!(negotiate(2, 2), Some(2), "a version-2 peer is still spoken");
    assert_eq!(negotiate(2, 3), Some(3), "a version-3 peer is still spoken");
    assert_eq!(negotiate(3, 4), Some(4));
    assert_eq!(negotiate(2, 4), Some(4), "a version-4 peer is still spoken");
    assert_eq!(negotiate(3, 5), Some(5));
    assert_eq!(
        PROTOCOL_VERSION, 5,
        "usage reports and tunnels are version 5"
    );
    assert_eq!(negotiate(1, 9), Some(PROTOCOL_VERSION));
    assert_eq!(negotiate(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3), None);
    assert_eq!(negotiate(0, 0), None);
    assert_eq!(negotiate(2, 1), None, "empty range");
    let h = Hello {
        min_version: 7,
        max_version: 8,
        node_name: "n".into(),
        capabilities: Capabilities::NONE,
        software: "".into(),
    };
    assert_eq!(
        h.negotiate(),
        Err(FrameError::UnsupportedVersion {
            peer_min: 7,
            peer_max: 8
        })
    );
}

#[test]
fn capabilities_set_ops() {
    let c = Capabilities::LOG_FOLLOW.union(Capabilities::WASM);
    assert!(c.contains(Capabilities::WASM));
    assert!(!c.contains(Capabilities::POD_DELTA));
    assert_eq!(
        c.intersect(Capabilities::WASM.union(Capabilities::POD_DELTA)),
        Capabilities::WASM
    );
}

#[test]
fn oversized_header_is_rejected_before_allocating() {
    let mut dec = FrameDecoder::<NodeToPlane>::new(MAX_BOOTSTRAP_FRAME);
    let big = ((MAX_BOOTSTRAP_FRAME + 1) as u32).to_be_bytes();
    let mut input: &[u8] = &[big[0], big[1], big[2], big[3], 0, 0, 0];
    let e = dec.push(&mut input).unwrap().unwrap_err();
    assert_eq!(
        e,
        FrameError::TooLarge {
            len: MAX_BOOTSTRAP_FRAME + 1,
            max: MAX_BOOTSTRAP_FRAME
        }
    );
    assert!(e.is_fatal());
    assert_eq!(dec.buffer_capacity(), 0);
    // Stays failed; drains input and terminates a `while let` loop.
    let mut more: &[u8] = &[0, 0, 0, 1, 0];
    assert_eq!(dec.push(&mut more), Some(Err(e)));
    assert!(more.is_empty());
    assert_eq!(dec.push(&mut more), None);
    assert_eq!(dec.finish(), Err(e));
}

#[test]
fn encoder_enforces_the_limit() {
    let msg = NodeToPlane::LogChunk {
        stream: 1,
        data: vec![0; 100],
        eof: false,
        error: None,
    };
    assert!(matches!(
        encode_frame(&msg, 50),
        Err(FrameError::TooLarge { max: 50, .. })
    ));
    let mut out = vec![9];
    assert!(encode_frame_into(&msg, &mut out, 50).is_err());
    assert_eq!(out, [9], "nothing appended on error");
}

#[test]
fn body_buffer_grows_only_with_input() {
    let mut dec = FrameDecoder::<NodeToPlane>::new(MAX_FRAME);
    let mut input: &[u8] = &[0x00, 0x40, 0, 0, 1, 2, 3];
    assert!(dec.push(&mut input).is_none());
    assert!(
        dec.buffer_capacity() < 64,
        "capacity {}",
        dec.buffer_capacity()
    );
    assert_eq!(
        dec.finish(),
        Err(FrameError::Truncated {
            have: 7,
            need: 4 + (0x40 << 16)
        })
    );
}

#[test]
fn truncation_is_reported_at_end_of_stream() {
    let f = encode_frame(&sample::node_to_plane()[0], MAX_FRAME).unwrap();
    for cut in 1..f.len() {
        let (got, dec) = decode_all::<NodeToPlane>(&f[..cut], 2, MAX_FRAME);
        assert!(got.is_empty());
        assert!(
            matches!(dec.finish(), Err(FrameError::Truncated { .. })),
            "cut {cut}"
        );
        assert!(matches!(
            decode_frame::<NodeToPlane>(&f[..cut], MAX_FRAME),
            Err(FrameError::Truncated { .. })
        ));
    }
}

#[test]
fn malformed_and_unknown_frames_keep_the_stream_in_sync() {
    let good = NodeToPlane::Ping { nonce: 42 };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0, 0, 0, 0]); // empty body
    bytes.extend_from_slice(&[0, 0, 0, 2, 99, 0]); // variant 99 (a newer peer's message)
    bytes.extend_from_slice(&[0, 0, 0, 3, 11, 1, 0]); // Ping{1} + trailing byte
    bytes.extend_from_slice(&[0, 0, 0, 2, 0x80, 0x80]); // unterminated varint tag
    encode_frame_into(&good, &mut bytes, MAX_FRAME).unwrap();
    let (got, dec) = decode_all::<NodeToPlane>(&bytes, 5, MAX_FRAME);
    assert_eq!(
        got,
        vec![
            Err(FrameError::Malformed {
                detail: "bad message tag"
            }),
            Err(FrameError::UnknownMessage { variant: 99 }),
            Err(FrameError::Malformed {
                detail: "trailing bytes"
            }),
            Err(FrameError::Malformed {
                detail: "bad message tag"
            }),
            Ok(good),
        ]
    );
    assert!(!got[1].as_ref().unwrap_err().is_fatal());
    assert!(dec.is_idle());
}

#[test]
fn bad_field_values_are_malformed() {
    // Hello with invalid UTF-8 in node_name.
    let body = [0, 1, 1, 1, 0xff, 0, 0];
    assert!(matches!(
        decode_body::<NodeToPlane>(&body),
        Err(FrameError::Malformed { .. })
    ));
    // A string claiming more bytes than the body has.
    let body = [0, 1, 1, 0xff, 0xff, 0x03, b'a'];
    assert_eq!(
        decode_body::<NodeToPlane>(&body),
        Err(FrameError::Malformed {
            detail: "body ends early"
        })
    );
    // A vec claiming ~4 billion elements must fail, not allocate.
    let body = [4, 1, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(decode_body::<PlaneToNode>(&body).is_err());
}

/// The shared bounded-fuzz driver (seeded splitmix64, time budget).
type Rng = skiff_test_support::fuzz::Bounded;

fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let len = f.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                f[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                f[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                f.insert(i, rng.next_u64() as u8);
            }
            3 if len > 0 => {
                f.remove(rng.below(len));
            }
            4 => f.truncate(rng.below(len + 1)),
            5 if len >= HEADER_LEN => {
                // Re-sync the length prefix with the mutated body (so the
                // body decoder, not just the framer, sees the damage).
                let n = (len - HEADER_LEN) as u32;
                f[..HEADER_LEN].copy_from_slice(&n.to_be_bytes());
            }
            6 if len > HEADER_LEN => {
                // Interesting varints at a random body position.
                let v: &[u8] = [
                    &[0xff, 0xff, 0xff, 0xff, 0x0f][..],
                    &[0x80, 0x80, 0x80],
                    &[0],
                ][rng.below(3)];
                let i = HEADER_LEN + rng.below(len - HEADER_LEN);
                let end = (i + v.len()).min(len);
                f[i..end].copy_from_slice(&v[..end - i]);
            }
            _ => {}
        }
    }
    f
}

/// Feeds `bytes` in random chunks; checks the decoder's invariants and that
/// everything accepted re-encodes and decodes to itself.
fn check_stream<M: Message + PartialEq + core::fmt::Debug>(
    rng: &mut Rng,
    bytes: &[u8],
    max: usize,
) -> usize {
    let mut dec = FrameDecoder::<M>::new(max);
    let mut rest = bytes;
    let mut accepted = 0;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(64));
        let mut input = &rest[..n];
        rest = &rest[n..];
        while let Some(r) = dec.push(&mut input) {
            if let Ok(m) = r {
                let f =
                    encode_frame(&m, max).expect("accepted message re-encodes within the limit");
                assert_eq!(decode_frame::<M>(&f, max).unwrap().0, m);
                accepted += 1;
            }
        }
        assert!(
            dec.buffer_capacity() <= max,
            "buffer {} > max {max}",
            dec.buffer_capacity()
        );
    }
    let _ = dec.finish();
    accepted
}

/// Bounded fuzzing on stable: seeded, a couple of seconds (`SKIFF_FUZZ_SECS`
/// overrides). Reports the seed on failure through the panic message.
#[test]
fn fuzz_decoders_bounded() {
    let mut rng = Rng::from_env(2.0, 0x5eed);
    let n2p: Vec<Vec<u8>> = sample::node_to_plane()
        .iter()
        .map(|m| encode_frame(m, MAX_FRAME).unwrap())
        .collect();
    let p2n: Vec<Vec<u8>> = sample::plane_to_node()
        .iter()
        .map(|m| encode_frame(m, MAX_FRAME).unwrap())
        .collect();
    let mut accepted = 0usize;
    while rng.running() {
        let to_node = rng.below(2) == 0;
        let seeds = if to_node { &p2n } else { &n2p };
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let frame = match rng.below(8) {
                0 => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
                1 => seeds[rng.below(seeds.len())].clone(),
                _ => {
                    let base = seeds[rng.below(seeds.len())].clone();
                    mutate(&mut rng, base)
                }
            };
            stream.extend_from_slice(&frame);
        }
        let max = if rng.below(4) == 0 { 256 } else { MAX_FRAME };
        accepted += if to_node {
            check_stream::<PlaneToNode>(&mut rng, &stream, max)
        } else {
            check_stream::<NodeToPlane>(&mut rng, &stream, max)
        };
    }
    let (runs, seed) = (rng.runs(), rng.seed);
    std::eprintln!("fuzz: {runs} streams, {accepted} frames accepted, seed {seed:#x}");
    assert!(runs > 100 && accepted > 0);
}

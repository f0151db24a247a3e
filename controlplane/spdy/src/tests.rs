use super::*;

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn every_frame() -> Vec<Frame> {
    crate::sample::every_frame()
}

#[test]
fn every_frame_round_trips_with_one_header_stream_per_direction() {
    let mut enc = Encoder::new();
    let mut wire = BytesMut::new();
    // Twice: the second header blocks lean on the first (one zlib stream).
    let frames: Vec<Frame> = every_frame().into_iter().chain(every_frame()).collect();
    for f in &frames {
        enc.encode(f, &mut wire);
    }
    let all = wire.clone();
    let mut dec = Decoder::new(Limits::default());
    let mut got = Vec::new();
    while let Some(f) = dec.decode(&mut wire).unwrap() {
        got.push(f);
    }
    assert!(wire.is_empty());
    assert_eq!(got, frames);
    // Byte by byte: a partial frame is `None` and nothing is lost.
    let mut dec = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in all {
        buf.put_u8(b);
        if let Some(f) = dec.decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
}

#[test]
fn the_first_header_block_uses_spdys_dictionary() {
    // zlib's header says "preset dictionary" (FDICT) with the dictionary's
    // Adler-32: a peer with another dictionary cannot read us.
    let mut enc = Encoder::new();
    let mut wire = BytesMut::new();
    enc.encode(
        &Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: vec![],
        },
        &mut wire,
    );
    let zlib = &wire[HEADER_LEN + 4..];
    assert_eq!(zlib[1] & 0x20, 0x20, "FDICT");
    let adler = u32::from_be_bytes(zlib[2..6].try_into().unwrap());
    let (mut a, mut b) = (1u32, 0u32);
    for &x in DICTIONARY {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    assert_eq!(adler, b << 16 | a);
    assert_eq!(DICTIONARY.len(), 1423);
}

#[test]
fn oversized_and_malformed_input_is_an_error_not_an_allocation() {
    let limits = Limits {
        max_frame: 1024,
        max_headers: 512,
    };
    // A length beyond the limit fails on the header alone.
    let mut buf = BytesMut::from(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        Decoder::new(limits).decode(&mut buf),
        Err(Error::TooLong {
            len: 0xff_ffff,
            max: 1024
        })
    );
    // Another version.
    let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
    assert_eq!(
        Decoder::new(limits).decode(&mut buf),
        Err(Error::Version(2))
    );
    // A PING without its id.
    let mut buf = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 0][..]);
    assert!(matches!(
        Decoder::new(limits).decode(&mut buf),
        Err(Error::Malformed { kind: "PING", .. })
    ));
    // Headers that inflate beyond the limit (a compression bomb).
    let mut enc = Encoder::new();
    let mut wire = BytesMut::new();
    enc.encode(
        &Frame::Headers {
            stream_id: 1,
            fin: false,
            headers: h(&[("big", &"a".repeat(4000))]),
        },
        &mut wire,
    );
    assert!(wire.len() < 1024, "compresses well");
    assert_eq!(
        Decoder::new(limits).decode(&mut wire),
        Err(Error::HeadersTooLarge(512))
    );
    // A header block that is not zlib.
    let mut buf = BytesMut::from(&[0x80, 3, 0, 8, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
    assert!(matches!(
        Decoder::new(limits).decode(&mut buf),
        Err(Error::Compression(_))
    ));
}

#[test]
fn a_header_count_beyond_the_block_is_refused() {
    assert!(matches!(
        parse_block(&[0xff, 0xff, 0xff, 0xff], "HEADERS"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        parse_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a'], "HEADERS"),
        Err(Error::Malformed { .. })
    ));
}

/// Seeded, time-bounded mutations of a whole kubectl exchange
/// (`cargo xtask fuzz spdy` runs it coverage-guided).
#[test]
fn fuzz_spdy_bounded() {
    let seed = fuzz::seed();
    fuzz::one(&seed);
    let mut run = skiff_test_support::fuzz::Bounded::from_env(1.0, 0x5d);
    while run.running() {
        let mut input = seed.clone();
        run.mutate(&mut input);
        fuzz::one(&input);
    }
}

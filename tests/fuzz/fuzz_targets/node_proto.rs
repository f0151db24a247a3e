//! The node protocol (`skiff-node-proto`), which the gateway decodes from
//! every node and the node from the gateway. Feeds arbitrary bytes to both
//! directions' decoders, in chunks chosen by the input itself, and checks the
//! decoder invariants: no panic, the body buffer never exceeds the limit, and
//! every accepted message re-encodes and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_node_proto::{
    FrameDecoder, MAX_BOOTSTRAP_FRAME, Message, NodeToPlane, PlaneToNode, decode_frame,
    encode_frame,
};

fn run<M: Message + PartialEq + core::fmt::Debug>(data: &[u8], max: usize, chunk: usize) {
    let mut dec = FrameDecoder::<M>::new(max);
    for piece in data.chunks(chunk) {
        let mut input = piece;
        while let Some(r) = dec.push(&mut input) {
            if let Ok(m) = r {
                let f = encode_frame(&m, max).expect("re-encodes within the limit");
                assert_eq!(decode_frame::<M>(&f, max).unwrap().0, m);
            }
        }
        assert!(dec.buffer_capacity() <= max);
    }
    let _ = dec.finish();
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let chunk = 1 + (ctl as usize & 0x3f);
    let max = if ctl & 0x40 != 0 {
        512
    } else {
        MAX_BOOTSTRAP_FRAME
    };
    if ctl & 0x80 != 0 {
        run::<PlaneToNode>(data, max, chunk);
    } else {
        run::<NodeToPlane>(data, max, chunk);
    }
});

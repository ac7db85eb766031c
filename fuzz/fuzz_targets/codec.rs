//! Fuzz target: the RTP payload parsers of the routing core — the VP8 payload descriptor
//! (parsed, written back and parsed again to the same value), VP8 and H.264 keyframe detection
//! and H.264 STAP-A aggregation units.
#![no_main]

use sluice_core::codec::{h264, vp8};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(descriptor) = vp8::Descriptor::parse(data) {
        let mut written = Vec::new();
        descriptor.write(&mut written);
        let again =
            vp8::Descriptor::parse(&written).map(|d| vp8::Descriptor { header_len: 0, ..d });
        assert_eq!(
            again.ok(),
            Some(vp8::Descriptor {
                header_len: 0,
                ..descriptor
            })
        );
    }
    let _ = vp8::is_keyframe(data);
    let _ = h264::is_keyframe(data);
    for unit in h264::stap_a_units(data) {
        if unit.is_err() {
            break;
        }
    }
});

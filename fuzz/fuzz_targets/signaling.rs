//! Fuzz target: a client's signaling bytes — a WebSocket text frame (JSON client message) when
//! the first byte is even, a WHIP/WHEP trickle-ice-sdpfrag PATCH body when it is odd.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode & 1 == 0 {
        sluice_signaling::fuzz::client_message(text);
    } else {
        sluice_signaling::fuzz::whip_fragment(text);
    }
});

//! Fuzz target: one RTMP connection's bytes through the handshake, the guard, rml_rtmp's
//! session and the ingest pipeline (FLV, AVC, AAC), plus the guard's AMF depth check alone.
#![no_main]

/// The guard runs every rml_rtmp call on the peer's bytes under `catch_unwind`
/// (`guard::contain`), and a panic there ends the connection with `DecoderPanicked`: the class
/// of failure the guard exists to contain. Those panics are let through; any other panic
/// aborts, as libFuzzer's own hook does.
fn abort_on_uncontained_panics() {
    let libfuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !sluice_sfu::fuzz::panic_is_contained() {
            libfuzzer_hook(info);
        }
    }));
}

libfuzzer_sys::fuzz_target!(init: abort_on_uncontained_panics(), |data: &[u8]| {
    sluice_sfu::fuzz::amf_depth(data);
    sluice_sfu::fuzz::rtmp_session(data);
});

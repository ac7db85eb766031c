//! Fuzz target: the RTSP paths Sluice owns after retina — stream selection from SDP names,
//! H.264 parameters and access units, AAC or G.711 setups and frames into the ingest pipeline.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_sfu::fuzz::rtsp_frames(data);
});

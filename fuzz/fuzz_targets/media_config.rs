//! Fuzz target: FLV audio/video tags, AVCDecoderConfigurationRecord (with SPS) and an access
//! unit under it, AAC AudioSpecificConfig and a frame under it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_sfu::fuzz::media_config(data);
});

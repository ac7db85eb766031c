//! Fuzz target: what the shard reads from raw datagrams (STUN binding requests and responses)
//! and from an ICE-TCP stream (RFC 4571 framing), plus a subscriber's compound RTCP through the
//! feedback helpers (NACKed packets, REMB).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_sfu::fuzz::shard_datagram(data);
    sluice_sfu::fuzz::rtcp_feedback(data);
});

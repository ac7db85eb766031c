//! Entry points for the coverage-guided fuzz targets (`fuzz/`, see docs/fuzzing.md): the
//! signaling parsers of client bytes, called as the server calls them. Compiled only with the
//! `fuzzing` feature; not part of the API.

use crate::protocol::ClientMessage;

/// One WebSocket text frame from a client: parsed and bounds-checked as the session does;
/// an accepted message serializes back and parses to itself.
pub fn client_message(text: &str) {
    let Ok(message) = crate::session::parse(text) else {
        return;
    };
    let _ = message.request_id();
    let json = serde_json::to_string(&message).expect("invariant: a parsed message serializes");
    let again: ClientMessage =
        serde_json::from_str(&json).expect("invariant: a serialized message parses");
    assert_eq!(
        serde_json::to_value(&again).ok(),
        serde_json::to_value(&message).ok(),
        "a client message changes through a JSON round trip"
    );
}

/// The body of a WHIP/WHEP PATCH (trickle-ice-sdpfrag), parsed as the resource handler does.
pub fn whip_fragment(body: &str) {
    let _ = crate::whip::sdp::fragment(body);
}

//! The STUN facts the shard reads from raw datagrams before any peer connection sees them:
//! whose binding request a datagram is (the local half of its USERNAME), and whether an
//! outgoing datagram is a binding success response (proof that the ICE agent accepted a check
//! with our credentials from that address).

/// The magic cookie of RFC 5389 STUN messages.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;

/// The STUN message type of `datagram`, when it is a well-formed STUN header whose declared
/// length fits the datagram.
fn message_type(datagram: &[u8]) -> Option<u16> {
    let header = datagram.get(..HEADER_LEN)?;
    // The two top bits of every STUN message are zero (RFC 5389 §6); DTLS and RTP differ.
    if header.first()? & 0xc0 != 0 || header.get(4..8)? != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?]));
    if datagram.len() < HEADER_LEN + length {
        return None;
    }
    Some(u16::from_be_bytes([*header.first()?, *header.get(1)?]))
}

/// The local ufrag a binding request names: the part of its USERNAME before the colon
/// (`"<ours>:<theirs>"`, RFC 8445 §7.2.2). `None` for anything else, malformed input included.
pub(crate) fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    if message_type(datagram)? != BINDING_REQUEST {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]));
    let mut attributes = datagram.get(HEADER_LEN..HEADER_LEN + length)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([*attributes.first()?, *attributes.get(1)?]);
        let len = usize::from(u16::from_be_bytes([
            *attributes.get(2)?,
            *attributes.get(3)?,
        ]));
        let value = attributes.get(4..4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (ours, _theirs) = username.split_once(':')?;
            return (!ours.is_empty()).then_some(ours);
        }
        // Attributes are padded to a multiple of four bytes.
        let next = (4 + len).next_multiple_of(4);
        attributes = attributes.get(next.min(attributes.len())..)?;
    }
    None
}

/// Whether `datagram` is a STUN binding success response.
pub(crate) fn is_binding_success(datagram: &[u8]) -> bool {
    message_type(datagram) == Some(BINDING_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A binding request carrying only a USERNAME attribute.
    fn binding_request(username: &str) -> Vec<u8> {
        let value = username.as_bytes();
        let padded = value.len().next_multiple_of(4);
        let mut out = Vec::new();
        out.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        out.extend_from_slice(&u16::try_from(4 + padded).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE);
        out.extend_from_slice(&[7; 12]);
        out.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(value);
        out.resize(HEADER_LEN + 4 + padded, 0);
        out
    }

    #[test]
    fn reads_the_local_half_of_the_username() {
        let request = binding_request("srv1:cli2");
        assert_eq!(local_ufrag(&request), Some("srv1"));
        assert!(!is_binding_success(&request));
    }

    #[test]
    fn a_username_without_colon_or_local_half_names_nobody() {
        assert_eq!(local_ufrag(&binding_request("srv1")), None);
        assert_eq!(local_ufrag(&binding_request(":cli2")), None);
    }

    #[test]
    fn a_success_response_is_not_a_request() {
        let mut response = binding_request("srv1:cli2");
        response[..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        assert!(is_binding_success(&response));
        assert_eq!(local_ufrag(&response), None);
    }

    #[test]
    fn a_declared_length_beyond_the_datagram_is_not_stun() {
        let mut request = binding_request("srv1:cli2");
        request.truncate(request.len() - 1);
        assert_eq!(local_ufrag(&request), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = local_ufrag(&bytes);
            let _ = is_binding_success(&bytes);
        }

        #[test]
        fn arbitrary_attributes_after_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut datagram = Vec::new();
            datagram.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
            datagram.extend_from_slice(&u16::try_from(body.len()).unwrap_or(0).to_be_bytes());
            datagram.extend_from_slice(&MAGIC_COOKIE);
            datagram.extend_from_slice(&[0; 12]);
            datagram.extend_from_slice(&body);
            let _ = local_ufrag(&datagram);
        }
    }
}

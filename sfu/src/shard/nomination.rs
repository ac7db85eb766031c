//! Aggressive nomination against `rtc`'s lite agent: clients that are themselves minimal ICE
//! agents (ffmpeg's WHIP muxer) put USE-CANDIDATE on every binding request from the first.
//! `rtc`'s controlled agent answers such a request only once the pair has succeeded a check of
//! its own, which a lite agent never sends unanswered (the shard's egress gate holds it until
//! a success response validated the address): the connection never comes up.
//!
//! Until a connection is up, the shard hands its agent, before each such request, a copy
//! without USE-CANDIDATE, signed again with the connection's local password — only when the
//! original's MESSAGE-INTEGRITY verifies under that password, so nothing unauthenticated is
//! answered. The agent answers the copy (validating the address) and checks the pair; the
//! client answers that check, and its next USE-CANDIDATE request nominates the pair.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::stun::attributes::{ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USE_CANDIDATE};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter};

use super::peer::ShardPeer;

/// Before `peer`'s agent reads `datagram` (its connection not up yet): a nominating check
/// with valid credentials is held, and the agent first reads its copy without USE-CANDIDATE.
pub(crate) fn before_read(
    peer: &mut ShardPeer,
    datagram: &[u8],
    is_check: bool,
    from: SocketAddr,
    local: SocketAddr,
    now: Instant,
) {
    if !is_check {
        return;
    }
    let Some(pwd) = peer
        .pc
        .local_description()
        .and_then(|d| ice_pwd(&d.sdp).map(str::to_owned))
    else {
        return;
    };
    let Some(copy) = without_use_candidate(datagram, &pwd) else {
        return;
    };
    peer.nominating = Some(datagram.to_vec());
    read(peer, &copy, from, local, now);
}

/// After the agent read `datagram` (call for binding success responses): when it answered the
/// agent's own check, the held nominating check is read again, now on a succeeded pair (which
/// it nominates).
pub(crate) fn after_read(
    peer: &mut ShardPeer,
    datagram: &[u8],
    from: SocketAddr,
    local: SocketAddr,
    now: Instant,
) {
    if peer.connected || !super::stun::is_binding_success(datagram) {
        return;
    }
    if let Some(held) = peer.nominating.take() {
        read(peer, &held, from, local, now);
    }
}

fn read(peer: &mut ShardPeer, datagram: &[u8], from: SocketAddr, local: SocketAddr, now: Instant) {
    let _ = peer.pc.handle_read(TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(datagram),
    });
}

/// `datagram` (a binding request with valid credentials under `local_pwd`) without its
/// USE-CANDIDATE attribute, signed again; `None` for anything else.
pub(crate) fn without_use_candidate(datagram: &[u8], local_pwd: &str) -> Option<Vec<u8>> {
    let mut request = Message::new();
    request.raw = datagram.to_vec();
    request.decode().ok()?;
    if !request.contains(ATTR_USE_CANDIDATE) {
        return None;
    }
    let provider = rtc::crypto::default_provider().ok()?;
    let crypto = provider.crypto();
    MessageIntegrity::check(&mut request, local_pwd.as_bytes(), crypto).ok()?;
    let mut copy = Message::new();
    copy.typ = request.typ;
    copy.transaction_id = request.transaction_id;
    copy.write_header();
    for attribute in &request.attributes.0 {
        let signature = [ATTR_USE_CANDIDATE, ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT];
        if !signature.contains(&attribute.typ) {
            copy.add(attribute.typ, &attribute.value);
        }
    }
    MessageIntegrity::new_short_term_integrity_with_provider(local_pwd.to_owned(), crypto)
        .add_to(&mut copy)
        .ok()?;
    FINGERPRINT.add_to(&mut copy).ok()?;
    Some(copy.raw)
}

/// The `a=ice-pwd` of an SDP.
pub(crate) fn ice_pwd(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=ice-pwd:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use rtc::ice::attributes::use_candidate::UseCandidateAttr;
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::BINDING_REQUEST;
    use rtc::stun::textattrs::Username;

    use super::*;

    fn request(pwd: &str, use_candidate: bool) -> Vec<u8> {
        let provider = rtc::crypto::default_provider().expect("provider");
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(rtc::stun::message::TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, "ours:theirs".to_owned())),
        ];
        if use_candidate {
            setters.push(Box::<UseCandidateAttr>::default());
        }
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.to_owned(),
                provider.crypto(),
            ),
        ));
        setters.push(Box::new(FINGERPRINT));
        m.build(&setters).expect("build");
        m.raw
    }

    #[test]
    fn a_nominating_request_is_copied_without_use_candidate_and_signed_again() {
        let copy = without_use_candidate(&request("secret", true), "secret").expect("copied");
        let mut m = Message::new();
        m.raw = copy;
        m.decode().expect("decodes");
        assert!(!m.contains(ATTR_USE_CANDIDATE));
        assert!(m.contains(ATTR_USERNAME));
        let provider = rtc::crypto::default_provider().expect("provider");
        MessageIntegrity::check(&mut m, b"secret", provider.crypto()).expect("signed again");
        FINGERPRINT.check(&m).expect("fingerprint");
    }

    #[test]
    fn requests_with_wrong_credentials_or_without_use_candidate_are_left_alone() {
        assert!(without_use_candidate(&request("secret", true), "other").is_none());
        assert!(without_use_candidate(&request("secret", false), "secret").is_none());
        assert!(without_use_candidate(b"not stun", "secret").is_none());
    }

    #[test]
    fn the_local_password_is_read_from_the_description() {
        assert_eq!(ice_pwd("v=0\r\na=ice-pwd:abc \r\n"), Some("abc"));
        assert_eq!(ice_pwd("v=0\r\n"), None);
    }
}

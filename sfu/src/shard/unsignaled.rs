//! A publisher's RTP on an SSRC it never signaled: which publication, if any, it continues.
//!
//! An encoder that restarts behind the same connection (a gateway, a restarted encoder
//! process) goes on with a new SSRC, its own sequence numbers and timestamps, without
//! renegotiating. `rtc` binds such a stream itself only for a simulcast layer named by its
//! rid; the rest reach the shard through `transport::unsignaled`. The shard continues a
//! single-encoding publication with it when the packet names the publication's media section,
//! by its MID header extension (RFC 8843 §9.2) or by being on a connection of one media
//! section, and carries the publication's codec (a retransmission or FEC payload type is
//! not media). The routing core takes the new SSRC as a new incarnation of the layer:
//! subscribers go on from its first keyframe, which it asks for, with contiguous sequence
//! numbers and timestamps. Anything else (no MID on a connection of several sections, the
//! mid of a simulcast publication, another codec) is dropped, counted as `unrouted`.
//!
//! The SSRCs a connection may use at all are bounded by `ssrc_gate`; the streams learned here
//! are kept in `ShardPeer::streams` with the others, so there are as few.

use std::time::Instant;

use tracing::debug;

use super::peer::{PeerKey, ShardPeer, Stream};
use super::worker::Worker;
use crate::transport::PeerRole;
use crate::transport::interceptors::AUDIO_LEVEL_URI;
use crate::transport::unsignaled::UnsignaledPacket;

impl ShardPeer {
    /// The stream an unsignaled packet continues (see the module docs), learned on its first
    /// packet; `codec_of` gives a publication's negotiated mime type.
    pub(crate) fn adopt(
        &mut self,
        unsignaled: &UnsignaledPacket,
        codec_of: impl Fn(crate::core::PublicationId) -> Option<String>,
    ) -> Option<Stream> {
        let ssrc = unsignaled.packet.header.ssrc;
        if let Some(stream) = self.streams.get(&ssrc) {
            return Some(*stream);
        }
        let transceivers: Vec<_> = self.pc.get_transceivers().collect();
        let mid = match &unsignaled.mid {
            Some(mid) => std::str::from_utf8(mid).ok()?.to_owned(),
            None if transceivers.len() == 1 => self
                .pc
                .rtp_transceiver(*transceivers.first()?)?
                .mid()
                .clone()?,
            None => return None,
        };
        let (publication, rids) = self.mids.get(&mid)?;
        // A simulcast layer is bound by its rid, in `rtc`; without one, no layer is named.
        if !rids.is_empty() {
            return None;
        }
        let publication = *publication;
        let receiver = transceivers.into_iter().find_map(|id| {
            let transceiver = self.pc.rtp_transceiver(id)?;
            (transceiver.mid().as_deref() == Some(mid.as_str()))
                .then(|| transceiver.receiver())
                .flatten()
        })?;
        let mime = codec_of(publication)?;
        let payload_type = unsignaled.packet.header.payload_type;
        let (carries_media, audio_level) = {
            let mut receiver = self.pc.rtp_receiver(receiver)?;
            let parameters = &receiver.get_parameters().rtp_parameters;
            // Retransmission and FEC payload types have mime types of their own.
            let carries_media = parameters.codecs.iter().any(|codec| {
                codec.payload_type == payload_type
                    && codec.rtp_codec.mime_type.eq_ignore_ascii_case(&mime)
            });
            let audio_level = parameters
                .header_extensions
                .iter()
                .find(|extension| extension.uri == AUDIO_LEVEL_URI)
                .and_then(|extension| u8::try_from(extension.id).ok());
            (carries_media, audio_level)
        };
        if !carries_media {
            return None;
        }
        let stream = Stream {
            publication,
            layer: 0,
            audio_level,
        };
        self.receivers.entry(publication).or_insert(receiver);
        self.streams.insert(ssrc, stream);
        Some(stream)
    }
}

impl Worker {
    /// Routes what the publisher connection `key`'s chain took off as unsignaled (see the
    /// module docs).
    pub(super) fn route_unsignaled(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.role != PeerRole::Publisher || !peer.controls.unsignaled.pending() {
            return;
        }
        let packets = peer.controls.unsignaled.take();
        self.stats.unrouted += peer.controls.unsignaled.take_dropped();
        for unsignaled in packets {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let ssrc = unsignaled.packet.header.ssrc;
            if peer
                .abandoned
                .get(&ssrc)
                .is_some_and(|run| run.contains(unsignaled.packet.header.sequence_number, now))
            {
                self.stats.stale_dropped += 1;
                continue;
            }
            let known = peer.streams.contains_key(&ssrc);
            let publications = &self.publications;
            let stream = peer.adopt(&unsignaled, |publication| {
                publications
                    .get(&publication)
                    .map(|slot| slot.codec.mime_type.clone())
            });
            let Some(stream) = stream else {
                self.stats.unrouted += 1;
                continue;
            };
            if !known {
                debug!(
                    participant = %peer.participant,
                    publication = %stream.publication,
                    ssrc,
                    mid = ?unsignaled.mid,
                    "an SSRC the publisher did not signal continues its publication"
                );
            }
            let reported = peer.reported.get(&ssrc).copied();
            self.route_rtp(stream, unsignaled.packet, reported, now);
        }
    }
}

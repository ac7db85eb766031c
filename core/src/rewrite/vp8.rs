//! VP8 payload-descriptor continuity: after a layer switch or a re-publish, the picture id,
//! TL0PICIDX and KEYIDX of the new incarnation continue where the subscriber's stream left off,
//! so its decoder sees one stream instead of a jump it could take for lost frames. Frames a
//! subscription drops on purpose (temporal layers) are taken out of the picture-id sequence
//! the same way, so the decoder sees consecutive ids over the frames it gets. TL0PICIDX
//! needs no such care: base-layer frames are never dropped.

use bytes::{BufMut, Bytes, BytesMut};

use super::drops::DropCompressor;

use crate::codec::vp8::{Descriptor, PictureId};

const PICTURE_ID_MOD: u16 = 1 << 15;
const KEY_INDEX_MOD: u8 = 1 << 5;

/// The descriptor fields the continuity rewrite reads, parsed once per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Vp8Meta {
    /// 15-bit (or 7-bit) picture id.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    pub key_index: Option<u8>,
    /// TID: the temporal layer of the frame (0 = base); `None` when the sender marks none.
    pub temporal_id: Option<u8>,
    /// Y: the frame depends only on base-layer frames, so forwarding can move up to its
    /// temporal layer here.
    pub layer_sync: bool,
}

impl Vp8Meta {
    pub(crate) fn parse(payload: &[u8]) -> Option<Vp8Meta> {
        let descriptor = Descriptor::parse(payload).ok()?;
        Some(Vp8Meta {
            picture_id: descriptor.picture_id.map(|id| match id {
                PictureId::Short(id) => u16::from(id),
                PictureId::Long(id) => id,
            }),
            tl0_pic_idx: descriptor.tl0_pic_idx,
            key_index: descriptor.key_index,
            temporal_id: descriptor.temporal_id,
            layer_sync: descriptor.layer_sync.unwrap_or(false),
        })
    }
}

/// Offsets added to one incarnation's descriptor fields for one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Vp8Patch {
    pub picture_id: u16,
    pub tl0_pic_idx: u8,
    pub key_index: u8,
}

impl Vp8Patch {
    pub(crate) fn is_identity(&self) -> bool {
        *self == Vp8Patch::default()
    }

    /// The payload with the patched descriptor; the same `Bytes` when there is nothing to
    /// change (the common case: a subscriber that never switched).
    pub(crate) fn apply(&self, payload: &Bytes) -> Bytes {
        if self.is_identity() {
            return payload.clone();
        }
        let Ok(mut descriptor) = Descriptor::parse(payload) else {
            return payload.clone();
        };
        descriptor.picture_id = descriptor.picture_id.map(|id| match id {
            PictureId::Short(id) => {
                PictureId::Short((u16::from(id).wrapping_add(self.picture_id) & 0x7f) as u8)
            }
            PictureId::Long(id) => {
                PictureId::Long(id.wrapping_add(self.picture_id) % PICTURE_ID_MOD)
            }
        });
        descriptor.tl0_pic_idx = descriptor
            .tl0_pic_idx
            .map(|idx| idx.wrapping_add(self.tl0_pic_idx));
        descriptor.key_index = descriptor
            .key_index
            .map(|idx| idx.wrapping_add(self.key_index) % KEY_INDEX_MOD);
        let mut head = Vec::with_capacity(descriptor.header_len);
        descriptor.write(&mut head);
        let mut out = BytesMut::with_capacity(head.len() + payload.len() - descriptor.header_len);
        out.put_slice(&head);
        out.put_slice(&payload[descriptor.header_len..]);
        out.freeze()
    }
}

/// The subscription's side: what it has sent so far and the patch of the current incarnation.
#[derive(Clone, Debug, Default)]
pub(crate) struct Vp8Continuity {
    patch: Vp8Patch,
    last_picture_id: Option<u16>,
    last_tl0_pic_idx: Option<u8>,
    last_key_index: Option<u8>,
    /// The current incarnation's picture ids, unwrapped, and the frames dropped among them.
    picture_ids: PictureIdUnwrapper,
    dropped_frames: DropCompressor,
}

impl Vp8Continuity {
    /// A new incarnation starts with `first`: continue right after what was sent.
    pub(crate) fn start_incarnation(&mut self, first: &Vp8Meta) {
        self.picture_ids = PictureIdUnwrapper::default();
        self.dropped_frames = DropCompressor::default();
        let mut patch = Vp8Patch::default();
        if let (Some(last), Some(id)) = (self.last_picture_id, first.picture_id) {
            patch.picture_id =
                (last + 1).wrapping_sub(id).wrapping_add(PICTURE_ID_MOD) % PICTURE_ID_MOD;
        }
        if let (Some(last), Some(idx)) = (self.last_tl0_pic_idx, first.tl0_pic_idx) {
            patch.tl0_pic_idx = last.wrapping_add(1).wrapping_sub(idx);
        }
        if let (Some(last), Some(idx)) = (self.last_key_index, first.key_index) {
            patch.key_index =
                (last + 1).wrapping_sub(idx).wrapping_add(KEY_INDEX_MOD) % KEY_INDEX_MOD;
        }
        self.patch = patch;
    }

    /// A packet of the current incarnation is dropped on purpose: its frame leaves no gap in
    /// the picture ids sent after it.
    pub(crate) fn on_drop(&mut self, meta: &Vp8Meta) {
        if let Some(id) = meta.picture_id {
            let id = self.picture_ids.unwrap(id);
            self.dropped_frames.drop_input(id);
        }
    }

    /// Records a packet being sent and returns the patch to apply to it.
    pub(crate) fn on_send(&mut self, meta: &Vp8Meta) -> Vp8Patch {
        let mut p = self.patch;
        if let Some(id) = meta.picture_id {
            let unwrapped = self.picture_ids.unwrap(id);
            // An id older than the window has no known place; leave it as the incarnation had it.
            let removed = self.dropped_frames.removed_below(unwrapped).unwrap_or(0);
            p.picture_id = p
                .picture_id
                .wrapping_sub((removed % u64::from(PICTURE_ID_MOD)) as u16)
                .wrapping_add(PICTURE_ID_MOD)
                % PICTURE_ID_MOD;
            let out = id.wrapping_add(p.picture_id) % PICTURE_ID_MOD;
            if self.last_picture_id.is_none_or(|last| newer_15(out, last)) {
                self.last_picture_id = Some(out);
            }
        }
        if let Some(idx) = meta.tl0_pic_idx {
            let out = idx.wrapping_add(p.tl0_pic_idx);
            if self
                .last_tl0_pic_idx
                .is_none_or(|last| out.wrapping_sub(last) < 128)
            {
                self.last_tl0_pic_idx = Some(out);
            }
        }
        if let Some(idx) = meta.key_index {
            let out = idx.wrapping_add(p.key_index) % KEY_INDEX_MOD;
            if self
                .last_key_index
                .is_none_or(|last| (out.wrapping_sub(last) % KEY_INDEX_MOD) < 16)
            {
                self.last_key_index = Some(out);
            }
        }
        p
    }
}

/// Extends 15-bit picture ids to `u64` (each one the interpretation closest to the newest).
/// 7-bit ids are taken as 15-bit ones: they are rare and only their drop accounting suffers.
#[derive(Clone, Debug, Default)]
struct PictureIdUnwrapper {
    newest: Option<u64>,
}

impl PictureIdUnwrapper {
    fn unwrap(&mut self, id: u16) -> u64 {
        let id = id % PICTURE_ID_MOD;
        let ext = match self.newest {
            // Far from zero, so that ids from before the first one stay representable.
            None => (1 << 32) + u64::from(id),
            Some(newest) => {
                let delta =
                    id.wrapping_sub(newest as u16).wrapping_add(PICTURE_ID_MOD) % PICTURE_ID_MOD;
                if delta < PICTURE_ID_MOD / 2 {
                    newest + u64::from(delta)
                } else {
                    newest - u64::from(PICTURE_ID_MOD - delta)
                }
            }
        };
        if self.newest.is_none_or(|newest| ext > newest) {
            self.newest = Some(ext);
        }
        ext
    }
}

/// Whether 15-bit picture id `a` is newer than (or equal to) `b`.
fn newer_15(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) % PICTURE_ID_MOD) < PICTURE_ID_MOD / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(picture_id: u16, tl0: u8, key_index: u8, keyframe: bool) -> Bytes {
        let descriptor = Descriptor {
            non_reference: false,
            start_of_partition: true,
            partition_index: 0,
            picture_id: Some(PictureId::Long(picture_id)),
            tl0_pic_idx: Some(tl0),
            temporal_id: Some(0),
            layer_sync: Some(true),
            key_index: Some(key_index),
            header_len: 0,
        };
        let mut out = Vec::new();
        descriptor.write(&mut out);
        out.extend([if keyframe { 0x00 } else { 0x01 }, 0xaa, 0xbb]);
        Bytes::from(out)
    }

    #[test]
    fn identity_patch_shares_the_payload() {
        let p = payload(100, 5, 3, true);
        let out = Vp8Patch::default().apply(&p);
        assert_eq!(out.as_ptr(), p.as_ptr(), "no copy without a switch");
    }

    #[test]
    fn a_switch_continues_picture_id_tl0_and_key_index() {
        let mut c = Vp8Continuity::default();
        let first = payload(32760, 250, 30, true);
        let meta = Vp8Meta::parse(&first).expect("valid");
        c.start_incarnation(&meta);
        c.on_send(&meta);
        let second = payload(32767, 255, 31, false);
        c.on_send(&Vp8Meta::parse(&second).expect("valid"));
        // Switch to a layer whose ids are elsewhere entirely.
        let other = payload(7, 90, 2, true);
        let other_meta = Vp8Meta::parse(&other).expect("valid");
        c.start_incarnation(&other_meta);
        let patch = c.on_send(&other_meta);
        let out = Vp8Meta::parse(&patch.apply(&other)).expect("valid");
        assert_eq!(out.picture_id, Some(0), "32767 + 1 wraps to 0");
        assert_eq!(out.tl0_pic_idx, Some(0), "255 + 1 wraps to 0");
        assert_eq!(out.key_index, Some(0), "31 + 1 wraps to 0");
        // The VP8 payload after the descriptor is untouched.
        let rewritten = patch.apply(&other);
        assert_eq!(&rewritten[rewritten.len() - 3..], &other[other.len() - 3..]);
        // The next packet of the new incarnation follows on.
        let next = payload(8, 91, 2, false);
        let patch = c.on_send(&Vp8Meta::parse(&next).expect("valid"));
        let out = Vp8Meta::parse(&patch.apply(&next)).expect("valid");
        assert_eq!((out.picture_id, out.tl0_pic_idx), (Some(1), Some(1)));
    }

    #[test]
    fn payloads_without_a_descriptor_pass_unchanged() {
        let patch = Vp8Patch {
            picture_id: 5,
            tl0_pic_idx: 1,
            key_index: 1,
        };
        let raw = Bytes::from_static(&[]);
        assert_eq!(patch.apply(&raw), raw);
    }
}

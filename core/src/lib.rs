//! The IO-free media routing core.
//!
//! Nothing here does IO, spawns tasks or reads the clock: a [`Room`] is fed inputs with
//! the current time and returns outputs (see [`Room`] for the driving loop). That keeps
//! every routing decision unit-testable with synthetic packets and a fake clock.
//!
//! A packet is parsed once per publication into a `PacketMeta` (extended sequence number
//! and timestamp, incarnation, keyframe); each subscription then decides to send it with its
//! own rewritten header (SSRC, payload type, sequence number, timestamp) or to drop it for
//! a counted [`DropReason`]. The payload `Bytes` is shared by all subscribers.

#![warn(missing_docs, unreachable_pub)]

mod config;
mod dedup;
pub mod downlink;
mod ids;
mod input;
mod keyframe_cache;
mod keyframe_requests;
mod layer;
mod liveness;
mod output;
mod packet;
mod publication;
mod random;
mod rewrite;
mod room;
mod simulcast_layer;
mod speakers;
mod stats;
mod subscription;
mod temporal;

#[cfg(test)]
mod tests;

pub use ids::{ParseIdError, ParticipantId, PublicationId, Ssrc, SubscriptionId};
pub use layer::Layer;
pub mod codec;

pub use packet::{Codec, DropReason, MediaKind, RtpPacket};
pub use room::{
    CoreError, DropCounts, Input, LayerChangeReason, Output, PublicationStats, Room, RoomConfig,
    RoomConfigError, RoomStats, SubscriptionStats,
};

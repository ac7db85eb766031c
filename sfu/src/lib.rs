//! # sluice-sfu — the media plane of Sluice
//!
//! Sluice is a selective forwarding unit: it receives each publisher's RTP once and forwards it
//! to every subscriber without decoding, rewriting only the RTP header per subscriber.
//!
//! ## Layers
//!
//! - [`core`] — the **IO-free routing core**, the crate `sluice-core` re-exported (its only
//!   dependencies are `bytes`, `thiserror` and `tracing`, so the compiler keeps IO out). A
//!   [`core::Room`] is a pure state machine fed
//!   packets and time; it never reads the clock, never touches a socket, never spawns. It
//!   decides what to forward to whom (with per-subscription SSRC / payload type / sequence /
//!   timestamp rewriting), when to ask a publisher for a keyframe, and counts every drop with
//!   a typed reason. Its run-loop contract:
//!   1. `room.handle_input(now, input)` for every packet or control change;
//!   2. drain `room.poll_output()` until `None` and carry out each output;
//!   3. sleep until `room.poll_timeout()` (if any), then call `room.handle_timeout(now)`
//!      and go to 2.
//! - [`codec`] — pure parsers of payload headers (VP8 descriptor, H.264 NAL units) used for
//!   keyframe detection.
//! - [`shard`] — the media plane: one thread per shard owning its socket on the one UDP port,
//!   its sans-IO `rtc` peer connections in ICE-lite mode and the rooms placed on it, driving
//!   [`core::Room`] directly (no task or channel hop per packet).
//! - [`transport`] — what each shard connection is built from (codecs, the interceptor chain
//!   for NACK/RTX, reports, GCC/TWCC and probing) and the value types signaling sees
//!   connections in (SDP strings, [`transport::IceCandidate`], [`transport::ConnectionState`]);
//!   with [`shard`], the only modules that import the WebRTC stack.
//! - [`runtime`] — the tokio shell: one task per room keeping who is in it and what is
//!   published, one task per participant turning its requests into room and shard requests.
//!   Signaling uses [`runtime::Sfu`] and [`runtime::Participant`]. New subscriber
//!   connections are admitted against the server's capacity there ([`runtime::Admission`]).
//! - [`ingest`] — media from outside WebRTC: the RTMP server (OBS, ffmpeg) and RTSP cameras,
//!   converted into ordinary publications (H.264 passed through, AAC → Opus) in a room.
//! - [`admission`] — live connections counted per source address, for the accept loops.
//!
//! ## Example
//!
//! ```no_run
//! use sluice_sfu::runtime::{Permissions, Sfu, SfuConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let sfu = Sfu::start(SfuConfig::default())?;
//! let permissions = Permissions { can_publish: true, can_subscribe: true };
//! let (mut alice, snapshot) = sfu.join("room-1", "alice".to_owned(), permissions).await?;
//! println!("{} publications already in the room", snapshot.publications.len());
//! while let Some(event) = alice.next_event().await {
//!     println!("tell the client: {event:?}");
//! }
//! # Ok(())
//! # }
//! ```

pub use sluice_core as core;
pub use sluice_core::codec;
pub mod admission;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod ingest;
pub mod runtime;
pub mod shard;
pub mod transport;

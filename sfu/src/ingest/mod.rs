//! Ingest: media produced outside WebRTC, converted in process into ordinary publications.
//!
//! RTMP (OBS, ffmpeg, hardware encoders) pushes to `rtmp://host/live/<stream key>`; RTSP
//! sources (IP cameras, NVRs) are pulled ([`rtsp`]) into the same pipeline from `media` on.
//! The RTMP path:
//!
//! ```text
//! TCP ─▶ rtmp::protocol (rml_rtmp behind Sluice's trait + guard) ─▶ flv tags
//!   video: avc (sequence header → SPS/PPS, profile-level-id; AVCC → Annex B, SPS/PPS before
//!          every IDR) ─▶ packetize (FU-A / STAP-A ≤ 1200 bytes, marker on a frame's last packet)
//!   audio: audio (AAC-LC decode → 48 kHz → Opus 20 ms) ─▶ packetize
//!   ─▶ room (IngestParticipant / IngestPublication: the routing core fans out, and keeps a
//!      video publication's packets since its last keyframe so viewers start at once)
//! ```
//!
//! - [`keys`]: which stream key maps to which room and identity (configured or signed keys).
//! - `registry`: one publisher per target; a dropped connection parks its stream for the
//!   reconnect grace period so the encoder can resume the same publications.
//!
//! ```no_run
//! use sluice_sfu::ingest::{RtmpConfig, RtmpServer, StreamKeys, StreamTarget};
//! use sluice_sfu::runtime::{Sfu, SfuConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let sfu = Sfu::start(SfuConfig::default())?;
//! let mut keys = StreamKeys::new();
//! keys.add("a-long-random-stream-key", StreamTarget { room: "stage".into(), identity: "obs".into() })
//!     .expect("a valid key");
//! let rtmp = RtmpServer::start(RtmpConfig::default(), keys, sfu).await?;
//! println!("publish to rtmp://{}/live/a-long-random-stream-key", rtmp.local_addr());
//! # Ok(())
//! # }
//! ```

pub(crate) mod audio;
pub(crate) mod avc;
mod clock;
pub(crate) mod flv;
pub(crate) mod g711;
pub mod keys;
mod latency;
pub(crate) mod media;
mod registry;
mod renditions;
pub mod rtmp;
pub mod rtsp;
mod stats;
mod stream_publisher;
mod timeline;
mod video;

pub use keys::{KeyError, StreamKeys, StreamTarget};
pub use registry::StreamCounts;
pub use rtmp::{RtmpConfig, RtmpServer, RtmpStreams};
pub use rtsp::{
    RtspConfig, RtspCredentials, RtspSource, RtspSourceError, RtspSourceId, RtspSources,
    RtspTransport, RunningSource,
};
pub use stats::StreamStatsSnapshot;

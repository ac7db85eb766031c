//! End-to-end tests: the real server on loopback against independent clients.
#![allow(clippy::unwrap_used)]

mod admission;
mod data;
mod freshness;
mod grants;
mod hostile;
mod limits;
mod liveness;
mod liveness_ingest;
mod log_secrets;
mod malformed_media;
mod mute;
mod operations;
mod relay;
mod resume;
mod rtmp;
mod rtmp_session;
mod rtsp;
mod rtsp_api;
mod rtsp_input;
mod shard;
mod signaling;
mod soak;
mod synthetic;
mod webhooks;
mod whep;
mod whip;

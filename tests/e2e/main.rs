//! End-to-end tests: the real server on loopback against independent clients.
#![allow(clippy::unwrap_used)]

mod hostile;
mod log_secrets;
mod malformed_media;
mod operations;
mod relay;
mod resume;
mod rtmp;
mod rtmp_session;
mod rtsp;
mod rtsp_input;
mod shard;
mod signaling;
mod synthetic;
mod whip;

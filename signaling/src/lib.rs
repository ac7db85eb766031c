//! # sluice-signaling — the control plane of Sluice
//!
//! Clients connect to `/ws`, join a room with a signed token and negotiate their two peer
//! connections (publisher: the client offers; subscriber: the server offers) with JSON
//! messages defined in [`protocol`]. [`session`] is the per-connection state machine, generic
//! over the frame transport so it is unit-testable; [`server`] is the axum shell around it;
//! [`auth`] verifies HS256 room tokens; [`resume`] keeps dropped participants for a grace
//! period so their client can re-attach; [`config`] merges flags and environment ([`cli`]) with
//! a TOML file; [`origin`] is the WebSocket Origin allowlist; [`metrics`] renders `/metrics`;
//! [`whip`] serves WHIP ingest and WHEP playback over HTTP; [`api`] is the server API for
//! application backends and [`admin`] its client, behind the `sluice` admin subcommands;
//! [`webhooks`] tells the application's receivers what happens; [`cluster`] registers the node
//! and places its rooms in a cluster coordinated through Redis (`--redis`).

pub mod accept;
pub mod admin;
pub mod api;
pub mod api_rtsp;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod media_plane;
pub mod metrics;
pub mod origin;
pub mod protocol;
pub mod resume;
pub mod secret;
pub mod server;
pub mod session;
pub mod webhooks;
pub mod whip;

//! Extended (never wrapping) sequence numbers and timestamps, and the per-subscription
//! output numbering built on them. Wire `u16`/`u32` values only exist at the edges:
//! unwrapping on ingest, truncation when the rewritten header is produced.

pub(crate) mod drops;
pub(crate) mod numbering;
pub(crate) mod seq;
pub(crate) mod timestamp;
pub(crate) mod vp8;

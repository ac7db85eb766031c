//! Pure parsers of codec payload bytes as they arrive from the network. They never
//! panic: every parser returns `Result` and is property-tested with arbitrary bytes.

pub mod h264;
pub mod vp8;

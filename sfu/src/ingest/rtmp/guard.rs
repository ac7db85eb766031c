//! Checks every RTMP message before rml_rtmp's session acts on it.
//!
//! rml_rtmp trusts its peer in ways a public server cannot: it accepts any chunk size up to
//! 2^31-1 (and 0), decodes AMF recursively (a deeply nested command overflows the stack and
//! aborts the process) and has arithmetic on header fields that panics on crafted input. The
//! guard runs its own chunk decoder over the same bytes, in step with the session's, and refuses
//! the connection before the session sees a message that would hurt it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::RtmpMessage;

use super::amf::{MAX_AMF_DEPTH, nests_deeper_than};
use super::protocol::ProtocolError;

/// Smallest chunk size accepted: the protocol's default. Smaller chunks only multiply the
/// per-chunk work (1-byte chunks were a CPU exhaustion in other servers).
pub const MIN_CHUNK_SIZE: u32 = 128;
/// Largest chunk size accepted: a message is at most 2^24-1 bytes, so larger chunk sizes mean
/// nothing but some decoders allocate them up front.
pub const MAX_CHUNK_SIZE: u32 = 0xff_ffff;

const SET_CHUNK_SIZE: u8 = 1;
const AMF3_DATA: u8 = 15;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;

pub struct Guard {
    chunks: ChunkDeserializer,
    /// Bytes taken since the last complete message: what a half-received message holds.
    pending: usize,
    /// The message stream of the latest `publish` or `play` command: where its answer goes.
    stream_command: Option<u32>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            chunks: ChunkDeserializer::new(),
            pending: 0,
            stream_command: None,
        }
    }
}

impl Guard {
    /// Checks the messages completed by `bytes`. `max_pending` bounds the bytes a message may
    /// take before it is complete (a declared length larger than anything sensible, or a body
    /// that never ends, is refused once that much has arrived).
    pub fn check(&mut self, bytes: &[u8], max_pending: usize) -> Result<(), ProtocolError> {
        let mut input = bytes;
        self.pending += bytes.len();
        loop {
            let next = contain(|| self.chunks.get_next_message(input))?
                .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            input = &[];
            let Some(message) = next else { break };
            self.pending = 0;
            match message.type_id {
                SET_CHUNK_SIZE => {
                    let size = match message.to_rtmp_message() {
                        Ok(RtmpMessage::SetChunkSize { size }) => size,
                        _ => return Err(ProtocolError::Malformed("bad SetChunkSize".into())),
                    };
                    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
                        return Err(ProtocolError::ChunkSize(size));
                    }
                    self.chunks
                        .set_max_chunk_size(size as usize)
                        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                }
                // rml_rtmp skips a leading zero byte of "AMF3" commands: measure both ways.
                AMF0_DATA | AMF0_COMMAND | AMF3_DATA | AMF3_COMMAND
                    if nests_deeper_than(&message.data, MAX_AMF_DEPTH)
                        || nests_deeper_than(
                            message.data.get(1..).unwrap_or_default(),
                            MAX_AMF_DEPTH,
                        ) =>
                {
                    return Err(ProtocolError::AmfTooDeep(MAX_AMF_DEPTH));
                }
                AMF0_COMMAND | AMF3_COMMAND
                    if names_stream_command(&message.data)
                        || names_stream_command(message.data.get(1..).unwrap_or_default()) =>
                {
                    self.stream_command = Some(message.message_stream_id);
                }
                _ => {}
            }
        }
        if self.pending > max_pending {
            return Err(ProtocolError::MessageTooLarge(max_pending));
        }
        Ok(())
    }
}

impl Guard {
    /// The message stream of the latest `publish` or `play` command checked: rml_rtmp's
    /// session raises such a request without it, and its `onStatus` answer belongs there.
    pub fn stream_of_last_request(&self) -> Option<u32> {
        self.stream_command
    }
}

/// Whether an AMF0 command body starts with the command name `publish` or `play`.
fn names_stream_command(body: &[u8]) -> bool {
    const PUBLISH: &[u8] = b"\x02\x00\x07publish";
    const PLAY: &[u8] = b"\x02\x00\x04play";
    body.starts_with(PUBLISH) || body.starts_with(PLAY)
}

/// Runs a call into rml_rtmp, turning a panic on crafted input into an error. The state the
/// call was working on may be inconsistent afterwards: the caller ends the connection.
pub fn contain<T>(call: impl FnOnce() -> T) -> Result<T, ProtocolError> {
    #[cfg(feature = "fuzzing")]
    let _containing = crate::fuzz::Containing::enter();
    catch_unwind(AssertUnwindSafe(call)).map_err(|_| ProtocolError::DecoderPanicked)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn chunks(type_id: u8, data: Vec<u8>) -> Vec<u8> {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            message_stream_id: 0,
            type_id,
            data: data.into(),
        };
        ChunkSerializer::new()
            .serialize(&payload, false, false)
            .unwrap()
            .bytes
    }

    #[test]
    fn chunk_sizes_outside_the_range_are_refused() {
        for (size, ok) in [
            (1u32, false),
            (127, false),
            (128, true),
            (4096, true),
            (0xff_ffff, true),
            (0x0100_0000, false),
            (0x7fff_ffff, false),
        ] {
            let mut guard = Guard::default();
            let result = guard.check(&chunks(1, size.to_be_bytes().to_vec()), 1 << 20);
            assert_eq!(result.is_ok(), ok, "size {size}: {result:?}");
        }
    }

    #[test]
    fn deep_amf_is_refused_and_shallow_amf_passes() {
        let deep = super::super::amf::tests::nested_objects(5000);
        let mut guard = Guard::default();
        assert!(matches!(
            guard.check(&chunks(AMF0_COMMAND, deep), 1 << 20),
            Err(ProtocolError::AmfTooDeep(_))
        ));
        let shallow = super::super::amf::tests::nested_objects(2);
        assert!(
            Guard::default()
                .check(&chunks(AMF0_COMMAND, shallow), 1 << 20)
                .is_ok()
        );
    }

    #[test]
    fn an_endless_message_is_refused_at_the_limit() {
        let mut guard = Guard::default();
        // Declares 1000 bytes; the body keeps not arriving in full.
        let mut bytes = chunks(9, vec![0x17; 1000]);
        bytes.truncate(600);
        assert!(guard.check(&bytes, 4096).is_ok());
        assert!(matches!(
            guard.check(&bytes, 1000),
            Err(ProtocolError::MessageTooLarge(1000))
        ));
    }

    #[test]
    fn the_stream_of_a_publish_or_play_command_is_noted() {
        let command = |name: &str, stream: u32| {
            let message = RtmpMessage::Amf0Command {
                command_name: name.to_owned(),
                transaction_id: 5.0,
                command_object: rml_rtmp::rml_amf0::Amf0Value::Null,
                additional_arguments: vec![rml_rtmp::rml_amf0::Amf0Value::Utf8String("key".into())],
            };
            let payload = message
                .into_message_payload(RtmpTimestamp::new(0), stream)
                .unwrap();
            ChunkSerializer::new()
                .serialize(&payload, true, false)
                .unwrap()
                .bytes
        };
        let mut guard = Guard::default();
        guard.check(&command("createStream", 0), 1 << 16).unwrap();
        assert_eq!(guard.stream_of_last_request(), None);
        guard.check(&command("publish", 1), 1 << 16).unwrap();
        assert_eq!(guard.stream_of_last_request(), Some(1));
        guard.check(&command("play", 3), 1 << 16).unwrap();
        assert_eq!(guard.stream_of_last_request(), Some(3));
    }

    #[test]
    fn arbitrary_bytes_never_escape_as_a_panic() {
        use proptest::prelude::*;
        proptest!(|(data in proptest::collection::vec(any::<u8>(), 0..512))| {
            let _ = Guard::default().check(&data, 1 << 16);
        });
    }
}

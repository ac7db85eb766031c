//! [`RtmpProtocol`] on rml_rtmp: its sans-IO handshake and server session, behind the
//! [`Guard`] that refuses what would hurt them.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

use super::guard::{Guard, contain};
use super::protocol::{ProtocolError, ProtocolEvent, RtmpProtocol};

/// Before a publish is accepted only commands are expected; they are small.
const SETUP_MESSAGE_LIMIT: usize = 64 * 1024;

/// One connection's RTMP state.
pub struct RmlProtocol {
    handshake: Option<Handshake>,
    session: Option<ServerSession>,
    guard: Guard,
    max_message_bytes: usize,
}

impl RmlProtocol {
    /// `max_message_bytes` bounds one media message (a video frame) while publishing.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            handshake: Some(Handshake::new(PeerType::Server)),
            session: None,
            guard: Guard::default(),
            max_message_bytes,
        }
    }

    fn session(&mut self) -> Result<&mut ServerSession, ProtocolError> {
        self.session
            .as_mut()
            .ok_or_else(|| ProtocolError::Malformed("no session before the handshake".into()))
    }

    fn dispatch(
        &mut self,
        results: Vec<ServerSessionResult>,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError> {
        for result in results {
            let event = match result {
                ServerSessionResult::OutboundResponse(packet) => ProtocolEvent::Send(packet.bytes),
                ServerSessionResult::RaisedEvent(event) => match event {
                    // Any application name may connect; the publish checks it.
                    ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                        let session = self.session()?;
                        let more = contain(|| session.accept_request(request_id))?
                            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                        self.dispatch(more, events)?;
                        continue;
                    }
                    ServerSessionEvent::PublishStreamRequested {
                        request_id,
                        app_name,
                        stream_key,
                        ..
                    } => ProtocolEvent::PublishRequested {
                        request: request_id,
                        app: app_name,
                        stream_key,
                    },
                    ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                        self.reject_publish(
                            request_id,
                            "NetStream.Play.Failed",
                            "Sluice does not play RTMP; watch over WebRTC",
                            events,
                        )?;
                        continue;
                    }
                    ServerSessionEvent::VideoDataReceived {
                        data, timestamp, ..
                    } => ProtocolEvent::Video {
                        timestamp_ms: timestamp.value,
                        data,
                    },
                    ServerSessionEvent::AudioDataReceived {
                        data, timestamp, ..
                    } => ProtocolEvent::Audio {
                        timestamp_ms: timestamp.value,
                        data,
                    },
                    ServerSessionEvent::PublishStreamFinished { .. } => {
                        ProtocolEvent::PublishFinished
                    }
                    ServerSessionEvent::UnhandleableAmf0Command { command_name, .. }
                        if command_name == "FCUnpublish" =>
                    {
                        ProtocolEvent::PublishFinished
                    }
                    _ => continue,
                },
                ServerSessionResult::UnhandleableMessageReceived(_) => continue,
            };
            events.push(event);
        }
        Ok(())
    }
}

impl RtmpProtocol for RmlProtocol {
    fn handle_input(
        &mut self,
        bytes: &[u8],
        publishing: bool,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError> {
        let mut input = bytes;
        let remaining;
        if let Some(handshake) = &mut self.handshake {
            let progress = contain(|| handshake.process_bytes(input))?
                .map_err(|e| ProtocolError::Handshake(e.to_string()))?;
            match progress {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    if !response_bytes.is_empty() {
                        events.push(ProtocolEvent::Send(response_bytes));
                    }
                    return Ok(());
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    if !response_bytes.is_empty() {
                        events.push(ProtocolEvent::Send(response_bytes));
                    }
                    self.handshake = None;
                    let (session, results) =
                        contain(|| ServerSession::new(ServerSessionConfig::new()))?
                            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                    self.session = Some(session);
                    self.dispatch(results, events)?;
                    remaining = remaining_bytes;
                    input = &remaining;
                }
            }
        }
        if input.is_empty() {
            return Ok(());
        }
        let limit = if publishing {
            self.max_message_bytes
        } else {
            SETUP_MESSAGE_LIMIT
        };
        self.guard.check(input, limit)?;
        let session = self.session()?;
        let results = contain(|| session.handle_input(input))?
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        self.dispatch(results, events)
    }

    fn handshake_done(&self) -> bool {
        self.handshake.is_none()
    }

    fn accept_publish(
        &mut self,
        request: u32,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError> {
        let session = self.session()?;
        let results = contain(|| session.accept_request(request))?
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        self.dispatch(results, events)
    }

    fn reject_publish(
        &mut self,
        request: u32,
        code: &str,
        description: &str,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError> {
        let session = self.session()?;
        let results = contain(|| session.reject_request(request, code, description))?
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        self.dispatch(results, events)
    }
}

//! [`RtmpProtocol`] on rml_rtmp: its sans-IO handshake and server session, behind the
//! [`Guard`] that refuses what would hurt them.

use std::collections::HashMap;

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;

use super::guard::{Guard, contain};
use super::protocol::{ProtocolError, ProtocolEvent, RtmpProtocol};

/// Before a publish is accepted only commands are expected; they are small.
const SETUP_MESSAGE_LIMIT: usize = 64 * 1024;
/// What the `NetStream.Publish.Start` status says: fixed, where rml_rtmp's own names the
/// stream key, which is a secret.
const PUBLISH_STARTED: &str = "Started publishing";

/// The settings of rml_rtmp's session: its defaults (chunk size 4096).
fn session_config() -> ServerSessionConfig {
    ServerSessionConfig::new()
}

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
                        ProtocolEvent::PlayRequested {
                            request: request_id,
                        }
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

    /// An `onStatus` command on the message stream of the latest publish or play request,
    /// as its own chunks. rml_rtmp answers a refusal with `_error` (encoders expect
    /// `onStatus`) and names the stream key in its accepting status, so Sluice writes both.
    ///
    /// The chunks start with a full header on rml_rtmp's command chunk stream, so the peer
    /// reads them whatever came before. rml_rtmp's serializer does not see them: a command it
    /// sends later on that chunk stream is still read right, except one on the same message
    /// stream with exactly the length of the status it replaced (only rml_rtmp's `_error` to a
    /// malformed second publish could be one). A refusal ends the connection, so nothing follows
    /// it.
    fn status(&self, level: &str, code: &str, description: &str) -> Result<Vec<u8>, ProtocolError> {
        let info = HashMap::from([
            ("level".to_owned(), Amf0Value::Utf8String(level.to_owned())),
            ("code".to_owned(), Amf0Value::Utf8String(code.to_owned())),
            (
                "description".to_owned(),
                Amf0Value::Utf8String(description.to_owned()),
            ),
        ]);
        let message = RtmpMessage::Amf0Command {
            command_name: "onStatus".to_owned(),
            transaction_id: 0.0,
            command_object: Amf0Value::Null,
            additional_arguments: vec![Amf0Value::Object(info)],
        };
        let stream = self.guard.stream_of_last_request().unwrap_or_default();
        let malformed = |e: &dyn std::fmt::Display| ProtocolError::Malformed(e.to_string());
        let payload = message
            .into_message_payload(RtmpTimestamp::new(0), stream)
            .map_err(|e| malformed(&e))?;
        let mut serializer = ChunkSerializer::new();
        // The chunk size rml_rtmp's session announced at its start.
        serializer
            .set_max_chunk_size(session_config().chunk_size, RtmpTimestamp::new(0))
            .map_err(|e| malformed(&e))?;
        let packet = serializer
            .serialize(&payload, true, false)
            .map_err(|e| malformed(&e))?;
        Ok(packet.bytes)
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
                    let (session, results) = contain(|| ServerSession::new(session_config()))?
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
        let mut results = contain(|| session.accept_request(request))?
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        // rml_rtmp answers StreamBegin, then `onStatus NetStream.Publish.Start` naming the
        // stream key: that last one is replaced.
        let Some(status_at) = results
            .iter()
            .rposition(|r| matches!(r, ServerSessionResult::OutboundResponse(_)))
        else {
            return Err(ProtocolError::Malformed(
                "publish accepted without a status".into(),
            ));
        };
        results.remove(status_at);
        self.dispatch(results, events)?;
        events.push(ProtocolEvent::Send(self.status(
            "status",
            "NetStream.Publish.Start",
            PUBLISH_STARTED,
        )?));
        Ok(())
    }

    fn reject_publish(
        &mut self,
        request: u32,
        code: &str,
        description: &str,
        events: &mut Vec<ProtocolEvent>,
    ) -> Result<(), ProtocolError> {
        // rml_rtmp forgets the request; its `_error` answer is not sent.
        let session = self.session()?;
        contain(|| session.reject_request(request, code, description))?
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        events.push(ProtocolEvent::Send(self.status(
            "error",
            code,
            description,
        )?));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rml_rtmp::chunk_io::ChunkDeserializer;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    };

    use super::*;

    const KEY: &str = "a-secret-stream-key-0123";

    /// An encoder (rml_rtmp's client session) and a server connection, in memory. Every byte
    /// the server sends is kept, so tests can read its messages as the encoder's side does.
    struct Pair {
        server: RmlProtocol,
        client: ClientSession,
        from_server: Vec<u8>,
        events: Vec<ClientSessionEvent>,
        request: Option<u32>,
    }

    impl Pair {
        /// Handshake, `connect` and `publish` on `KEY`: the server's answer is pending.
        fn publishing() -> Self {
            Self::requesting(|client| {
                client
                    .request_publishing(KEY.into(), PublishRequestType::Live)
                    .unwrap()
            })
        }

        /// Handshake, `connect` and the stream request `request` makes: the server's answer
        /// is pending.
        fn requesting(request: impl FnOnce(&mut ClientSession) -> ClientSessionResult) -> Self {
            let mut server = RmlProtocol::new(1 << 20);
            let mut handshake = Handshake::new(PeerType::Client);
            let mut to_server = handshake.generate_outbound_p0_and_p1().unwrap();
            let mut events = Vec::new();
            // The server's first session messages follow its handshake.
            let session_start = loop {
                server.handle_input(&to_server, false, &mut events).unwrap();
                let sent: Vec<u8> = sent(&mut events);
                if server.handshake_done() {
                    break sent;
                }
                match handshake.process_bytes(&sent).unwrap() {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        to_server = response_bytes
                    }
                    HandshakeProcessResult::Completed { response_bytes, .. } => {
                        to_server = response_bytes
                    }
                }
            };
            let (client, mut results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
            let mut pair = Self {
                server,
                client,
                from_server: Vec::new(),
                events: Vec::new(),
                request: None,
            };
            results.extend(pair.deliver_to_client(session_start));
            pair.deliver_to_server(results);
            let connect = pair.client.request_connection("live".into()).unwrap();
            pair.deliver_to_server(vec![connect]);
            let request = request(&mut pair.client);
            pair.deliver_to_server(vec![request]);
            assert!(pair.request.is_some(), "the request reached the server");
            pair
        }

        /// Carries the client's output to the server and the server's answers back, until
        /// neither has more to say.
        fn deliver_to_server(&mut self, results: Vec<ClientSessionResult>) {
            let mut pending = results;
            while !pending.is_empty() {
                let mut bytes = Vec::new();
                for result in pending.drain(..) {
                    match result {
                        ClientSessionResult::OutboundResponse(packet) => bytes.extend(packet.bytes),
                        ClientSessionResult::RaisedEvent(event) => self.events.push(event),
                        ClientSessionResult::UnhandleableMessageReceived(_) => {}
                    }
                }
                let mut events = Vec::new();
                self.server
                    .handle_input(&bytes, false, &mut events)
                    .unwrap();
                for event in &events {
                    if let ProtocolEvent::PublishRequested { request, .. }
                    | ProtocolEvent::PlayRequested { request } = event
                    {
                        self.request = Some(*request);
                    }
                }
                pending = self.deliver_to_client(sent(&mut events));
            }
        }

        fn deliver_to_client(&mut self, bytes: Vec<u8>) -> Vec<ClientSessionResult> {
            self.from_server.extend(&bytes);
            self.client.handle_input(&bytes).unwrap()
        }

        /// Delivers the server's answer to the publish to the client.
        fn answer(&mut self, events: &mut Vec<ProtocolEvent>) {
            let results = self.deliver_to_client(sent(events));
            self.deliver_to_server(results);
        }

        /// Every AMF0 command the server sent, as (name, its status object if any).
        fn commands(&self) -> Vec<(String, HashMap<String, Amf0Value>)> {
            // The handshake is not part of the chunk stream: start after S0 S1 S2.
            let mut chunks = ChunkDeserializer::new();
            let mut input: &[u8] = &self.from_server;
            let mut out = Vec::new();
            while let Some(payload) = chunks.get_next_message(input).unwrap() {
                input = &[];
                match payload.to_rtmp_message().unwrap() {
                    RtmpMessage::SetChunkSize { size } => {
                        chunks.set_max_chunk_size(size as usize).unwrap();
                    }
                    RtmpMessage::Amf0Command {
                        command_name,
                        additional_arguments,
                        ..
                    } => {
                        let status = match additional_arguments.into_iter().next() {
                            Some(Amf0Value::Object(object)) => object,
                            _ => HashMap::new(),
                        };
                        out.push((command_name, status));
                    }
                    _ => {}
                }
            }
            out
        }
    }

    fn sent(events: &mut Vec<ProtocolEvent>) -> Vec<u8> {
        events
            .drain(..)
            .flat_map(|event| match event {
                ProtocolEvent::Send(bytes) => bytes,
                _ => Vec::new(),
            })
            .collect()
    }

    fn text(status: &HashMap<String, Amf0Value>, field: &str) -> String {
        match status.get(field) {
            Some(Amf0Value::Utf8String(text)) => text.clone(),
            other => panic!("{field}: {other:?}"),
        }
    }

    #[test]
    fn an_accepted_publish_is_told_so_without_the_stream_key() {
        let mut pair = Pair::publishing();
        let mut events = Vec::new();
        pair.server
            .accept_publish(pair.request.unwrap(), &mut events)
            .unwrap();
        pair.answer(&mut events);
        assert!(
            pair.events
                .iter()
                .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)),
            "{:?}",
            pair.events
        );
        let commands = pair.commands();
        let (_, status) = commands
            .iter()
            .find(|(name, _)| name == "onStatus")
            .unwrap();
        assert_eq!(text(status, "code"), "NetStream.Publish.Start");
        assert_eq!(text(status, "level"), "status");
        assert_eq!(text(status, "description"), PUBLISH_STARTED);
        assert!(
            !String::from_utf8_lossy(&pair.from_server).contains(KEY),
            "the stream key is echoed"
        );
        // The session goes on: media the encoder sends reaches the server as media.
        let video = pair
            .client
            .publish_video_data(vec![0x17, 0, 0, 0, 0].into(), RtmpTimestamp::new(0), false)
            .unwrap();
        let ClientSessionResult::OutboundResponse(packet) = video else {
            panic!("not sent")
        };
        let mut events = Vec::new();
        pair.server
            .handle_input(&packet.bytes, true, &mut events)
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ProtocolEvent::Video { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_refused_publish_gets_an_on_status_error_on_its_stream() {
        let mut pair = Pair::publishing();
        let mut events = Vec::new();
        pair.server
            .reject_publish(
                pair.request.unwrap(),
                "NetStream.Publish.BadName",
                "stream key not accepted",
                &mut events,
            )
            .unwrap();
        pair.answer(&mut events);
        let commands = pair.commands();
        assert!(
            commands.iter().all(|(name, _)| name != "_error"),
            "{commands:?}"
        );
        let (_, status) = commands
            .iter()
            .find(|(name, _)| name == "onStatus")
            .unwrap();
        assert_eq!(text(status, "level"), "error");
        assert_eq!(text(status, "code"), "NetStream.Publish.BadName");
        assert_eq!(text(status, "description"), "stream key not accepted");
        // rml_rtmp's encoder session sees the status code (an `_error` would be a result of
        // an unknown transaction).
        assert!(
            pair.events.iter().any(|e| matches!(
                e,
                ClientSessionEvent::UnhandleableOnStatusCode { code }
                    if code == "NetStream.Publish.BadName"
            )),
            "{:?}",
            pair.events
        );
        assert!(!String::from_utf8_lossy(&pair.from_server).contains(KEY));
    }

    #[test]
    fn a_play_request_is_refused_with_an_on_status_error() {
        let mut pair = Pair::requesting(|client| client.request_playback(KEY.into()).unwrap());
        let mut events = Vec::new();
        pair.server
            .reject_publish(
                pair.request.unwrap(),
                "NetStream.Play.Failed",
                "Sluice does not play RTMP; watch over WebRTC",
                &mut events,
            )
            .unwrap();
        pair.answer(&mut events);
        let commands = pair.commands();
        let (_, status) = commands
            .iter()
            .find(|(name, _)| name == "onStatus")
            .unwrap();
        assert_eq!(text(status, "level"), "error");
        assert_eq!(text(status, "code"), "NetStream.Play.Failed");
        assert!(commands.iter().all(|(name, _)| name != "_error"));
    }
}

//! The protocol's TypeScript declarations, generated from its Rust types with `ts-rs` (and
//! `CloseCode` as a constant object), as checked in at `client-js/src/protocol.gen.ts`.

use ts_rs::TS;

use super::*;

/// The TypeScript declarations of the protocol, as checked in at
/// `client-js/src/protocol.gen.ts`.
pub fn typescript_bindings() -> String {
    let cfg = ts_rs::Config::new();
    let mut out = String::from(
        "// Generated from signaling/src/protocol.rs by `SLUICE_BLESS=1 cargo test -p sluice-signaling protocol`.\n\
         // Do not edit by hand: a test fails when this file is stale.\n\n",
    );
    let decls = [
        RequestIdAlias::decl(&cfg),
        ClientMessage::decl(&cfg),
        ServerMessage::decl(&cfg),
        ErrorCode::decl(&cfg),
        PeerRole::decl(&cfg),
        IceCandidate::decl(&cfg),
        TrackInfo::decl(&cfg),
        MediaKind::decl(&cfg),
        TrackSource::decl(&cfg),
        ParticipantInfo::decl(&cfg),
        PublicationInfo::decl(&cfg),
        SubscriptionInfo::decl(&cfg),
        Layer::decl(&cfg),
        LayerChangeReason::decl(&cfg),
        DataRejection::decl(&cfg),
        SubscriptionEndReason::decl(&cfg),
        LayerActivity::decl(&cfg),
        SpeakerInfo::decl(&cfg),
    ];
    for decl in decls {
        out.push_str("export ");
        out.push_str(&decl);
        out.push_str("\n\n");
    }
    out.push_str(&close_code_bindings());
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// `CloseCode` as a TypeScript constant object and the union of its values.
fn close_code_bindings() -> String {
    let mut out =
        String::from("/** WebSocket close codes of the protocol. */\nexport const CloseCode = {\n");
    for code in CloseCode::ALL {
        out.push_str(&format!(
            "  /** {} */\n  {}: {},\n",
            code.meaning(),
            code.name(),
            code.code()
        ));
    }
    out.push_str("} as const;\n\n/** One of the protocol's close codes. */\nexport type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];\n");
    out
}

/// Only here so the generated file names the `RequestId` type.
#[derive(TS)]
#[ts(rename = "RequestId")]
#[allow(dead_code)]
struct RequestIdAlias(u32);

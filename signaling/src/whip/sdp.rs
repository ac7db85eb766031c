//! What the WHIP/WHEP endpoints read from a client's SDP before handing it to the media plane:
//! its media sections (kind, mid, direction, codecs, simulcast rids), and the ICE lines of a
//! `application/trickle-ice-sdpfrag` PATCH body. Anything malformed is a reason for a 400.

use sluice_sfu::core::MediaKind;

/// Largest SDP offer or fragment accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Most media sections an offer may carry.
const MAX_SECTIONS: usize = 16;
/// The codecs the media plane forwards (the rest are never negotiated).
pub const SUPPORTED_CODECS: [&str; 3] = ["opus", "VP8", "H264"];

/// One `m=` section of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: MediaKind,
    pub mid: String,
    /// The client sends on it (`sendonly` or `sendrecv`).
    pub sends: bool,
    /// The client receives on it (`recvonly` or `sendrecv`).
    pub receives: bool,
    /// Codec names of its `a=rtpmap` lines (`VP8`, `opus`, `rtx`, ...).
    pub codecs: Vec<String>,
    /// Simulcast rids the client sends, lowest resolution first (see [`order_rids`]).
    pub rids: Vec<String>,
}

impl Section {
    /// Whether it lists a codec the media plane forwards.
    pub fn has_supported_codec(&self) -> bool {
        self.codecs
            .iter()
            .any(|c| SUPPORTED_CODECS.iter().any(|s| s.eq_ignore_ascii_case(c)))
    }
}

/// Why an offer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("malformed SDP: {0}")]
    Malformed(String),
    #[error("no usable codec: the offer lists {offered:?}, this server forwards {supported:?}")]
    NoUsableCodec {
        offered: Vec<String>,
        supported: Vec<String>,
    },
}

fn malformed(why: impl Into<String>) -> SdpError {
    SdpError::Malformed(why.into())
}

/// The audio and video sections of an offer (data channels and rejected sections skipped).
pub fn sections(sdp: &str) -> Result<Vec<Section>, SdpError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(malformed("an SDP offer starts with v=0"));
    }
    let mut found = Vec::new();
    let mut seen = 0;
    for block in sdp.split("\nm=").skip(1) {
        seen += 1;
        if seen > MAX_SECTIONS {
            return Err(malformed(format!(
                "more than {MAX_SECTIONS} media sections"
            )));
        }
        let mut lines = block.lines().map(str::trim);
        let m_line = lines.next().unwrap_or_default();
        let mut words = m_line.split_whitespace();
        let kind = match words.next() {
            Some("audio") => MediaKind::Audio,
            Some("video") => MediaKind::Video,
            Some(_) => continue,
            None => return Err(malformed("empty m= line")),
        };
        if words.next() == Some("0") {
            continue;
        }
        let (mut mid, mut direction) = (None, "sendrecv");
        let (mut codecs, mut rids, mut simulcast) = (Vec::new(), Vec::new(), None);
        for line in lines {
            let Some(attribute) = line.strip_prefix("a=") else {
                continue;
            };
            if let Some(value) = attribute.strip_prefix("mid:") {
                mid = Some(value.trim().to_owned());
            } else if let Some(value) = attribute.strip_prefix("rtpmap:") {
                let name = value
                    .split_once(' ')
                    .and_then(|(_, desc)| desc.split('/').next())
                    .ok_or_else(|| malformed(format!("bad rtpmap line {line:?}")))?;
                codecs.push(name.to_owned());
            } else if let Some(value) = attribute.strip_prefix("rid:") {
                let mut parts = value.split_whitespace();
                if let (Some(id), Some("send")) = (parts.next(), parts.next()) {
                    rids.push(id.to_owned());
                }
            } else if let Some(value) = attribute.strip_prefix("simulcast:") {
                simulcast = Some(simulcast_send(value));
            } else if matches!(attribute, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                direction = attribute;
            }
        }
        let mid = mid
            .filter(|m| !m.is_empty())
            .ok_or_else(|| malformed(format!("a {m_line:?} section has no a=mid")))?;
        // The simulcast line orders the rids; rids it does not list are not sent.
        let rids = match simulcast {
            Some(listed) => listed.into_iter().filter(|r| rids.contains(r)).collect(),
            None => Vec::new(),
        };
        found.push(Section {
            kind,
            mid,
            sends: matches!(direction, "sendrecv" | "sendonly"),
            receives: matches!(direction, "sendrecv" | "recvonly"),
            codecs,
            rids: order_rids(rids),
        });
    }
    Ok(found)
}

/// The rids of an `a=simulcast:` value's send direction, in its order (alternatives after a
/// comma and the `~` of a paused rid dropped).
fn simulcast_send(value: &str) -> Vec<String> {
    let mut words = value.split_whitespace();
    while let Some(direction) = words.next() {
        let Some(list) = words.next() else { break };
        if direction == "send" {
            return list
                .split(';')
                .filter_map(|alternatives| alternatives.split(',').next())
                .map(|rid| rid.trim_start_matches('~').to_owned())
                .filter(|rid| !rid.is_empty())
                .collect();
        }
    }
    Vec::new()
}

/// Simulcast rids lowest resolution first, as Sluice's layers are. The SDP does not say which
/// encoding is smallest: the usual names are ordered by their meaning (`q` < `h` < `f`, `low`
/// < `mid` < `high`, `l` < `m` < `h`); other names keep the order of the `a=simulcast` line,
/// which is then taken as lowest first.
pub fn order_rids(mut rids: Vec<String>) -> Vec<String> {
    const SCALES: [[&str; 3]; 3] = [["q", "h", "f"], ["low", "mid", "high"], ["l", "m", "h"]];
    for scale in SCALES {
        let rank = |rid: &String| scale.iter().position(|s| s.eq_ignore_ascii_case(rid));
        if rids.iter().all(|r| rank(r).is_some()) {
            rids.sort_by_key(rank);
            return rids;
        }
    }
    rids
}

/// Refuses an offer none of whose sections of interest lists a forwarded codec.
pub fn check_codecs(sections: &[&Section]) -> Result<(), SdpError> {
    if sections.iter().all(|s| s.has_supported_codec()) {
        return Ok(());
    }
    let mut offered: Vec<String> = sections.iter().flat_map(|s| s.codecs.clone()).collect();
    offered.sort_unstable();
    offered.dedup();
    offered.retain(|c| !matches!(c.to_ascii_lowercase().as_str(), "rtx" | "red" | "ulpfec"));
    Err(SdpError::NoUsableCodec {
        offered,
        supported: SUPPORTED_CODECS.iter().map(|c| (*c).to_owned()).collect(),
    })
}

/// The ICE lines of a trickle-ice-sdpfrag body (RFC 8840).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `candidate:` values, each with the mid of the section it stands in (if any).
    pub candidates: Vec<(Option<String>, String)>,
}

/// Most candidate lines one PATCH may carry.
pub const MAX_FRAGMENT_CANDIDATES: usize = 32;

/// Parses a trickle-ice-sdpfrag body.
pub fn fragment(body: &str) -> Result<Fragment, SdpError> {
    let mut fragment = Fragment::default();
    let mut mid = None;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(value) = line.strip_prefix("a=ice-ufrag:") {
            fragment.ufrag = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("a=ice-pwd:") {
            fragment.pwd = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("a=candidate:") {
            if fragment.candidates.len() >= MAX_FRAGMENT_CANDIDATES {
                return Err(malformed(format!(
                    "more than {MAX_FRAGMENT_CANDIDATES} candidates in one fragment"
                )));
            }
            fragment
                .candidates
                .push((mid.clone(), format!("candidate:{value}")));
        } else if !(line.starts_with("a=") || line.starts_with("m=")) {
            return Err(malformed(format!(
                "a trickle-ice-sdpfrag line must be a= or m=, not {line:?}"
            )));
        }
    }
    Ok(fragment)
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP.
pub fn credentials(sdp: &str) -> (Option<String>, Option<String>) {
    let value = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    (value("a=ice-ufrag:"), value("a=ice-pwd:"))
}

/// `sdp` with every `a=ice-ufrag`/`a=ice-pwd` line replaced by the given credentials.
pub fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let trimmed = line.trim_end();
        let ending = &line[trimmed.len()..];
        if trimmed.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}{ending}"));
        } else if trimmed.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}{ending}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests;

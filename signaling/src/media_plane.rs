//! Starting the media plane a configuration names: the shard (one thread owning one UDP port
//! for every connection, ICE-lite) or the webrtc-rs transport (a port and task set per
//! connection).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sluice_sfu::runtime::{Sfu, SfuConfig};
use sluice_sfu::shard::{Shard, ShardConfig, ShardError};

use crate::config::{Config, MediaPlane};

/// Starts the routing runtime on the media plane `config` names.
pub fn start_sfu(config: &Config, sfu_config: SfuConfig) -> Result<Sfu, ShardError> {
    match config.media_plane {
        MediaPlane::Webrtc => Ok(Sfu::new(sfu_config)),
        MediaPlane::Shard => {
            // As the webrtc plane: a loopback address is bound directly; any other is
            // advertised while the socket binds all interfaces (1:1 NAT, as on a cloud VM).
            let advertise = config.public_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let bind_ip = if advertise.is_loopback() {
                advertise
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            let shards = Shard::spawn_group(
                ShardConfig {
                    bind: SocketAddr::new(bind_ip, config.udp_port.unwrap_or(0)),
                    advertise: Some(advertise),
                    tcp_port: config.tcp_port.shard(),
                    playout_delay_ms: sfu_config.transport.playout_delay_ms,
                    room: sfu_config.room.clone(),
                    ..ShardConfig::default()
                },
                config.media_threads,
            )?;
            if let Some(shard) = shards.first() {
                tracing::info!(
                    udp = %shard.local_addr(),
                    tcp = ?shard.tcp_local_addr(),
                    %advertise,
                    threads = shards.len(),
                    "shard media plane"
                );
            }
            Ok(Sfu::with_shards(sfu_config, shards))
        }
    }
}

//! Starting the media plane a configuration describes: its shards (one per media thread) on
//! the one UDP port, the ICE-TCP port and the address advertised to clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sluice_sfu::runtime::{Sfu, SfuConfig};
use sluice_sfu::shard::{ShardConfig, ShardError};

use crate::config::Config;

/// Starts the media server: `config` sets the shards' sockets, advertised address, playout
/// delay and count; `sfu_config` everything else (limits, the rooms' routing core).
pub fn start_sfu(config: &Config, sfu_config: SfuConfig) -> Result<Sfu, ShardError> {
    // A loopback address is bound directly; any other is advertised while the socket binds
    // all interfaces (1:1 NAT, as on a cloud VM).
    let advertise = config.public_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let bind_ip = if advertise.is_loopback() {
        advertise
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let sfu = Sfu::start(SfuConfig {
        shard: ShardConfig {
            bind: SocketAddr::new(bind_ip, config.udp_port.unwrap_or(0)),
            advertise: Some(advertise),
            tcp_port: config.tcp_port.shard(),
            playout_delay_ms: config.playout_delay_ms(),
            ..sfu_config.shard
        },
        media_threads: config.media_threads,
        ..sfu_config
    })?;
    if let Some(shard) = sfu.shards().first() {
        tracing::info!(
            udp = %shard.local_addr(),
            tcp = ?shard.tcp_local_addr(),
            %advertise,
            threads = sfu.shards().len(),
            "media plane"
        );
    }
    Ok(sfu)
}

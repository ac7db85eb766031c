//! The `sluice` server binary.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use sluice_sfu::ingest::{RtmpConfig, RtmpServer, StreamKeys, StreamTarget};
use sluice_signaling::admin::AdminRequest;
use sluice_signaling::api::ParticipantPatch;
use sluice_signaling::auth::{Grants, TokenAuthority};
use sluice_signaling::cli::{AdminArgs, Cli, Command};
use sluice_signaling::config::{Config, RtmpKey, RtmpListen};
use sluice_signaling::media_plane::start_sfu;
use sluice_signaling::server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => {
            let authority = TokenAuthority::new(args.secret.as_bytes());
            let token = if args.admin {
                authority.mint_admin("admin", args.ttl())
            } else {
                authority.mint(&args.grants(), args.ttl())
            }
            .context("minting the token")?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Rooms(args)) => admin(&args, AdminRequest::ListRooms),
        Some(Command::Room(args)) => admin(&args.admin, AdminRequest::GetRoom { room: args.room }),
        Some(Command::CloseRoom(args)) => {
            admin(&args.admin, AdminRequest::CloseRoom { room: args.room })
        }
        Some(Command::Kick(args)) => admin(
            &args.admin,
            AdminRequest::Remove {
                room: args.room,
                identity: args.identity,
            },
        ),
        Some(Command::Mute(args)) => admin(
            &args.admin,
            AdminRequest::Mute {
                room: args.room,
                publication: args.publication,
                muted: true,
            },
        ),
        Some(Command::Unmute(args)) => admin(
            &args.admin,
            AdminRequest::Mute {
                room: args.room,
                publication: args.publication,
                muted: false,
            },
        ),
        Some(Command::Update(args)) => admin(
            &args.participant.admin,
            AdminRequest::Update {
                room: args.participant.room,
                identity: args.participant.identity,
                patch: ParticipantPatch {
                    name: args.name,
                    metadata: args.metadata,
                    can_publish: args.can_publish,
                    can_subscribe: args.can_subscribe,
                },
            },
        ),
        Some(Command::StreamKey(args)) => {
            let target = StreamTarget {
                room: args.room,
                identity: args.identity,
            };
            println!("{}", StreamKeys::sign(args.secret.as_bytes(), &target));
            Ok(())
        }
        None => {
            let config = Config::load(&cli.serve).context("loading configuration")?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve(config))
        }
    }
}

/// The room and identity the demo stream key publishes as.
const DEMO_ROOM: &str = "demo";
const DEMO_IDENTITY: &str = "encoder";

async fn serve(mut config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).context("parsing the log filter (--log)")?)
        .with_writer(std::io::stderr)
        .init();
    let demo_mode = config.secret.is_none();
    if config.test_hooks {
        tracing::warn!(
            "test hooks enabled (/debug/drop-socket, loopback only): never do this in production"
        );
    }
    // Demo mode: one stream key for the demo room, accepted by RTMP and WHIP alike and printed
    // below, so a first encoder publish works without configuration.
    let demo_key = demo_mode.then(|| {
        let key = format!("demo-{:032x}", rand::random::<u128>());
        config.rtmp_keys.push(RtmpKey {
            key: key.as_str().into(),
            room: DEMO_ROOM.to_owned(),
            identity: DEMO_IDENTITY.to_owned(),
        });
        key
    });
    let listen = config.listen;
    let rtmp_listen = config.rtmp;
    let drain_timeout = config.drain_timeout;
    let stream_keys = config.stream_keys().context("loading RTMP stream keys")?;
    config
        .rtsp_sources()
        .context("loading RTSP sources (rtsp_sources)")?;
    let sfu = start_sfu(&config, config.sfu_config()).context("starting the media plane")?;
    let server = Server::start(config, sfu.clone())
        .await
        .with_context(|| format!("binding HTTP/WebSocket listener on {listen}"))?;
    let rtsp = std::sync::Arc::clone(server.rtsp());
    let rtmp = match rtmp_listen {
        RtmpListen::Off => None,
        RtmpListen::On(addr) => {
            let config = RtmpConfig {
                listen: addr,
                ..RtmpConfig::default()
            };
            match RtmpServer::start(config, stream_keys, sfu).await {
                Ok(rtmp) => Some(rtmp),
                // The default port may be taken by another server on this machine (or another
                // Sluice): without an explicit --rtmp, serve WebRTC anyway and say so.
                Err(err) if rtmp_listen == Config::default().rtmp => {
                    tracing::warn!(%err, %addr, "RTMP ingest not started (pass --rtmp <addr:port> or --rtmp off)");
                    None
                }
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("binding RTMP listener on {addr} (--rtmp off disables it)")
                    });
                }
            }
        }
    };
    if let (Some(metrics), Some(rtmp)) = (server.metrics(), &rtmp) {
        metrics.watch_rtmp(rtmp.streams());
    }
    // Scripts and tests read this exact line to find the port (with --listen …:0).
    println!("sluice listening on http://{}", server.local_addr());
    if let Some(rtmp) = &rtmp {
        // Tests read this line too (with --rtmp …:0).
        println!(
            "sluice rtmp ingest on rtmp://{}/live/<stream key>",
            rtmp.local_addr()
        );
    }
    if !rtsp.is_empty() {
        println!("sluice rtsp ingest: pulling {} source(s)", rtsp.len());
    }
    if demo_mode {
        let http = server.local_addr();
        println!(
            "demo mode: no secret configured, a random one was generated; open http://{http}/ in two tabs"
        );
        if let Some(key) = &demo_key {
            print_demo_recipes(
                &server,
                http,
                rtmp.as_ref().map(RtmpServer::local_addr),
                key,
            );
        }
    }
    std::io::stdout().flush().context("writing to stdout")?;
    shutdown_signal().await;
    tracing::info!(deadline = ?drain_timeout, "draining: refusing new connections, closing sessions (1001)");
    server.begin_drain();
    let drain = async {
        let ingest = async {
            if let Some(rtmp) = rtmp {
                rtmp.shutdown().await;
            }
            rtsp.shutdown().await;
        };
        if tokio::time::timeout(drain_timeout, ingest).await.is_err() {
            tracing::warn!("RTMP or RTSP ingest still closing at the drain deadline");
        }
    };
    let drained = async { tokio::join!(drain, server.shutdown(drain_timeout)) };
    tokio::select! {
        _ = drained => tracing::info!("drained; exiting"),
        // A second signal: the operator does not want to wait.
        () = shutdown_signal() => tracing::warn!("second signal: exiting without finishing the drain"),
    }
    Ok(())
}

/// Ready-to-paste publish and play URLs for the demo room.
fn print_demo_recipes(
    server: &Server,
    http: std::net::SocketAddr,
    rtmp: Option<std::net::SocketAddr>,
    key: &str,
) {
    if let Some(rtmp) = rtmp {
        println!("demo RTMP: server rtmp://{rtmp}/live  stream key {key}");
        println!(
            "  ffmpeg -re -f lavfi -i testsrc=size=1280x720:rate=30 -f lavfi -i sine -pix_fmt yuv420p -c:v libx264 -tune zerolatency -g 60 -c:a aac -f flv rtmp://{rtmp}/live/{key}"
        );
    }
    println!("demo WHIP: http://{http}/whip/{DEMO_ROOM}  bearer token {key}");
    let grants = Grants {
        room: DEMO_ROOM.to_owned(),
        identity: "whip-demo".to_owned(),
        can_publish: true,
        can_subscribe: true,
        ..Grants::default()
    };
    if let Some(token) = server.demo_token(&grants, std::time::Duration::from_secs(24 * 3600)) {
        println!("  (or the room token {token})");
    }
    println!(
        "demo WHEP: http://{http}/whep/{DEMO_ROOM} (no token from this machine); watch at http://{http}/watch/{DEMO_ROOM}"
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Runs one server API request and prints its JSON answer.
fn admin(args: &AdminArgs, request: AdminRequest) -> anyhow::Result<()> {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(sluice_signaling::admin::send(
            &args.url,
            &args.secret,
            &request,
        ))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

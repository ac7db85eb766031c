#!/usr/bin/env bash
# Runs every test of Sluice: Rust (unit, property, end-to-end), the TypeScript SDK's unit tests
# and the browser end-to-end tests in headless Chromium. Installs what it needs when missing
# (chromium, cmake for the bundled libopus, g++ for libFuzzer, ffmpeg as the RTMP publisher,
# GStreamer's RTSP server with its H.264/AAC/G.711 plugins as the RTSP camera, nftables and
# iproute2 for the ICE-TCP test's network namespace, redis-server for the cluster tests).
# Usage: scripts/test.sh            (from anywhere; CI calls it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
# libFuzzer's C++ sources (libfuzzer-sys) for the fuzz targets' build.
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
# The ICE-TCP browser test blocks UDP in a network namespace of its own.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The cluster tests (signaling/tests/cluster.rs) start a Redis of their own.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The RTSP camera of the tests (tests/rtsp/serve.py): gst-rtsp-server from Python, x264enc
# (ugly), x265enc (bad: the refused H.265 camera), avenc_aac (libav), mulawenc and the RTP
# payloaders (good).
rtsp_camera_check='import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
assert all(Gst.ElementFactory.find(e) for e in ("x264enc", "x265enc", "avenc_aac", "mulawenc", "rtph264pay", "rtpmp4gpay"))'
/usr/bin/python3 -c "$rtsp_camera_check" >/dev/null 2>&1 || need_apt+=(gir1.2-gst-rtsp-server-1.0 python3-gi
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav)
# The WHIP test's ffmpeg comes from PyPI (imageio-ffmpeg: ffmpeg 9 with the whip muxer; Debian's
# 5.1 has none), installed in a venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]} (apt)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

step "npm ci (client-js, tests/browser)"
(cd client-js && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

step "cargo fmt --check / clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests (unit, property, end-to-end with webrtc-rs clients)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked
fi

step "fuzz targets: replay the seeds and reproducers, then 3 s of libFuzzer each (scripts/fuzz.sh)"
scripts/fuzz.sh smoke 3

step "client-js: typecheck, unit tests, demo bundle freshness"
(cd client-js && npm run typecheck && npm test && npm run check:assets)

step "ffmpeg with a WHIP muxer (PyPI imageio-ffmpeg, in target/whip-ffmpeg)"
if [ ! -x target/whip-ffmpeg/bin/python ] || ! target/whip-ffmpeg/bin/python -c 'import imageio_ffmpeg' 2>/dev/null; then
  python3 -m venv target/whip-ffmpeg
  target/whip-ffmpeg/bin/pip install -q --disable-pip-version-check imageio-ffmpeg
fi
SLUICE_WHIP_FFMPEG="$(target/whip-ffmpeg/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')"
export SLUICE_WHIP_FFMPEG

step "browser end-to-end tests (headless Chromium)"
# With --tests, features unify as they did for the tests above (dev-dependencies included), so
# only the binary is relinked; `--bins` alone rebuilt the dependencies (3.4 min on 2 cores).
cargo build --locked --workspace --bins --tests
(cd tests/browser && SLUICE_BIN="$PWD/../../target/debug/sluice" npm test)

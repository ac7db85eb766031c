#!/usr/bin/python3
"""A loopback RTSP server for Sluice's RTSP ingest tests (GStreamer's gst-rtsp-server).

Serves a test pattern and a tone at rtsp://127.0.0.1:PORT/cam as H.264 (2 s GOP, no
B-frames) with AAC, PCMU or no audio, or audio alone. Prints "ready PORT" once listening.

usage: serve.py PORT [--audio aac|pcmu|pcma|none] [--video h264|h265|none]
                     [--user NAME --password PASS [--auth basic|digest]]
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

VIDEO = {
    "h264": (
        "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=360,framerate=30/1"
        " ! videoconvert ! video/x-raw,format=I420"
        " ! x264enc tune=zerolatency speed-preset=veryfast bframes=0 key-int-max=60 bitrate=1000"
        " ! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1"
    ),
    "h265": (
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1"
        " ! x265enc tune=zerolatency key-int-max=60 ! rtph265pay name=pay0 pt=96"
    ),
}
AUDIO = {
    "aac": (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample"
        " ! audio/x-raw,rate=48000,channels=2 ! avenc_aac ! rtpmp4gpay name=pay{n} pt=97"
    ),
    "pcmu": (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample"
        " ! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay{n} pt=0"
    ),
    "pcma": (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample"
        " ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay{n} pt=8"
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--audio", default="aac", choices=[*AUDIO, "none"])
    parser.add_argument("--video", default="h264", choices=[*VIDEO, "none"])
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--auth", default="digest", choices=["basic", "digest"])
    args = parser.parse_args()

    Gst.init(None)
    parts = []
    if args.video != "none":
        parts.append(VIDEO[args.video])
    if args.audio != "none":
        parts.append(AUDIO[args.audio].format(n=len(parts)))
    launch = "( " + " ".join(parts) + " )"

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    # One pipeline per client: each session starts with a keyframe.
    factory.set_shared(False)
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        if args.auth == "digest":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        else:
            basic = GstRtspServer.RTSPAuth.make_basic(args.user, args.password)
            auth.add_basic(basic, token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(
            Gst.Structure.new_from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
        )
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print("cannot listen", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

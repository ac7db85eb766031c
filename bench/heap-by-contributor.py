#!/usr/bin/env python3
"""Groups the heap `sluice` held at its peak by what holds it, per subscriber.

Input: the stacks heaptrack_print writes with `--flamegraph-cost-type peak -F FILE` (one line
per call stack, frames root first separated by `;`, then the bytes it held at the peak); see
bench/heaptrack-sluice.sh. Each stack goes to the first group whose pattern it matches, so the
order below matters: the narrower groups come first. The groups are by call stack, so they are
approximate at their edges (an allocation made by a library on behalf of another part counts
where the stack says).

Usage: bench/heap-by-contributor.py STACKS SUBSCRIBERS [OTHER_LINES]
"""

import collections
import re
import sys

GROUPS = [
    ("signaling: WebSocket buffers (tungstenite), session and participant tasks and queues",
     r"tungstenite|\(ws\.rs\)|\(outbox\.rs\)|\(requests\.rs\)|\(resume\.rs\)|axum"),
    ("NACK history: rtc's responder's 1 024 packet slots per video stream",
     r"bind_local_stream \(responder\.rs\)"),
    ("NACK history: packets held (Sluice's responder: the last second)",
     r"\(responder\.rs\)|\(nack_responder\.rs\)"),
    ("publisher payloads the NACK history refers to (shared by a room)", r"decrypt_rtp"),
    ("TWCC send history (rtc's congestion controller)", r"\(history\.rs\)"),
    ("GCC windows (rtc's rate calculator, Sluice's queue-delay watch)", r"rate_calc|queue_delay"),
    ("SRTP-protected datagrams and the egress batch waiting for sendmmsg",
     r"encrypt_rtp|\(socket\.rs\)"),
    ("rtc pipeline write/read queues",
     r"(handle_write|poll_write|handle_read|poll_read) \((demuxer|ice|dtls|srtp|sctp|datachannel"
     r"|endpoint)\.rs\);(push_back|grow)|handle_write \(chain\.rs\);push_back"
     r"|\(interceptor\.rs\);handle_write \(chain\.rs\)|flush \(worker\.rs\);handle_write"),
    ("interceptor read/write queues (two per interceptor)",
     r"(handle_read|handle_write)<?>? \((receiver|sender|noop|feedback|reports|horizon|repeat"
     r"|probe|send_time|interceptor|rtx|chain)\.rs\);(push_back|grow)|pass_through\.rs"),
    ("rtc connection: the connection itself, SDP descriptions, transceivers, media engine, "
     "ICE/DTLS/SRTP state, event queues",
     r"set_description|add_rtp_transceiver|handshake|flight|dtls|add_ice_local|register_"
     r"|start_rtp|new_aead|media_engine|internal\.rs|agent|srtp|sctp|configure|\(peer\.rs\)"
     r"|handle_event|poll_event|start_transports|peer_of"),
    ("Sluice core and shard bookkeeping (rooms, subscriptions, legs)",
     r"\((room|publication|subscription|downlink|layer|keyframe_cache|routing|subscriber|worker"
     r"|forward|feedback|demux)\.rs\)"),
]
OTHER = "other (tokio runtime, logging, statics)"


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, subscribers = sys.argv[1], float(sys.argv[2])
    show_other = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    patterns = [(name, re.compile(pattern)) for name, pattern in GROUPS]
    held = collections.Counter()
    other = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as stacks:
        for line in stacks:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            size = int(count)
            total += size
            group = next((name for name, pattern in patterns if pattern.search(stack)), OTHER)
            held[group] += size
            if group == OTHER:
                other[";".join(stack.split(";")[-3:])] += size
    print(f"peak heap {total / 1e6:.2f} MB, {total / subscribers / 1024:.1f} KiB per subscriber")
    print("| held by | KiB per subscriber |")
    print("|---|---:|")
    for name, size in held.most_common():
        print(f"| {name} | {size / subscribers / 1024:.1f} |")
    for stack, size in other.most_common(show_other):
        print(f"  {size / 1e3:9.1f} kB  {stack[:200]}")


if __name__ == "__main__":
    main()

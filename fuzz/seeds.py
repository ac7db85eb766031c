#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/TARGET/) from the project's own
fixtures and test vectors: the protocol's golden JSON, the AAC test files, the SPS/PPS and
payloads of the unit tests. Run from the repository root; the output is committed."""
import glob
import os
import struct

OUT = "fuzz/corpus"


def write(target, name, data):
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data)


# signaling: mode byte 0 = JSON client message, 1 = trickle-ice-sdpfrag.
for path in sorted(glob.glob("tests/fixtures/protocol/client.*.json")):
    name = os.path.basename(path)[len("client."):-len(".json")]
    with open(path, "rb") as f:
        write("signaling", f"json-{name}", b"\x00" + f.read())
write("signaling", "sdpfrag", b"\x01a=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\nm=audio 9 RTP/AVP 0\r\n"
      b"a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n")

# H.264 parameter sets of the ingest tests (x264).
SPS_HIGH = bytes([0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
                  0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60])
SPS_BASE = bytes([0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00,
                  0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8])
PPS = bytes([0x68, 0xef, 0x8f, 0xcb])
IDR = bytes([0x65, 0x88, 0x84, 0x00, 0x33, 0xff])
NON_IDR = bytes([0x41, 0x9a, 0x02, 0x11])


def record(sps, pps):
    return bytes([1, sps[1], sps[2], sps[3], 0xff, 0xe1]) + struct.pack(">H", len(sps)) + sps \
        + b"\x01" + struct.pack(">H", len(pps)) + pps


def avcc(*units):
    return b"".join(struct.pack(">I", len(u)) + u for u in units)


def adts_frames(path):
    """The raw AAC frames of an ADTS file and its AudioSpecificConfig."""
    with open(path, "rb") as f:
        data = f.read()
    frames, config = [], None
    while len(data) >= 7:
        length = ((data[3] & 3) << 11) | (data[4] << 3) | (data[5] >> 5)
        header = 7 if data[1] & 1 else 9
        profile, freq, ch = (data[2] >> 6) + 1, (data[2] >> 2) & 0xf, ((data[2] & 1) << 2) | (data[3] >> 6)
        config = bytes([(profile << 3) | (freq >> 1), ((freq & 1) << 7) | (ch << 3)])
        frames.append(data[header:length])
        data = data[length:]
    return config, frames


aac = {}
for path in sorted(glob.glob("sfu/src/ingest/testdata/*.aac")):
    aac[os.path.basename(path)[:-4]] = adts_frames(path)

# media_config: mode 0 FLV video, 1 FLV audio, 2 AVC record + access unit, 3 AAC config + frame.
for label, sps in (("high", SPS_HIGH), ("baseline", SPS_BASE)):
    rec = record(sps, PPS)
    write("media_config", f"flv-avc-header-{label}", b"\x00\x17\x00\x00\x00\x00" + rec)
    write("media_config", f"avc-record-{label}", b"\x02" + bytes([len(rec)]) + rec + avcc(IDR))
write("media_config", "flv-avc-nalus", b"\x00\x27\x01\x00\x00\x21" + avcc(NON_IDR))
for label, (config, frames) in aac.items():
    write("media_config", f"flv-aac-config-{label}", b"\x01\xaf\x00" + config)
    write("media_config", f"flv-aac-raw-{label}", b"\x01\xaf\x01" + frames[1][:200])
    write("media_config", f"aac-{label}", b"\x03" + bytes([len(config)]) + config + frames[1])


# rtmp: mode byte (bit 0: handshake done for the input; the rest: read size), then chunks.
def chunk(csid, type_id, body, stream=0, ts=0):
    out = bytes([csid]) + ts.to_bytes(3, "big") + len(body).to_bytes(3, "big") + bytes([type_id]) \
        + struct.pack("<I", stream)
    for i in range(0, len(body), 128):
        if i:
            out += bytes([0xc0 | csid])
        out += body[i:i + 128]
    return out


def amf_str(s):
    return b"\x02" + struct.pack(">H", len(s)) + s.encode()


def amf_num(n):
    return b"\x00" + struct.pack(">d", n)


def amf_obj(props):
    out = b"\x03"
    for k, v in props:
        out += struct.pack(">H", len(k)) + k.encode() + v
    return out + b"\x00\x00\x09"


connect = chunk(3, 20, amf_str("connect") + amf_num(1) + amf_obj(
    [("app", amf_str("live")), ("type", amf_str("nonprivate")), ("flashVer", amf_str("FMLE/3.0")),
     ("tcUrl", amf_str("rtmp://127.0.0.1:1935/live"))]))
create = chunk(3, 20, amf_str("createStream") + amf_num(2) + b"\x05")
publish = chunk(4, 20, amf_str("publish") + amf_num(3) + b"\x05" + amf_str("key") + amf_str("live"), stream=1)
metadata = chunk(4, 18, amf_str("@setDataFrame") + amf_str("onMetaData") + b"\x08\x00\x00\x00\x01"
                 + struct.pack(">H", 5) + b"width" + amf_num(1280) + b"\x00\x00\x09", stream=1)
config, frames = aac["sine440_44100_stereo"]
media = chunk(6, 9, b"\x17\x00\x00\x00\x00" + record(SPS_BASE, PPS), stream=1) \
    + chunk(4, 8, b"\xaf\x00" + config, stream=1) \
    + chunk(6, 9, b"\x17\x01\x00\x00\x00" + avcc(IDR), stream=1, ts=0) \
    + chunk(4, 8, b"\xaf\x01" + frames[1], stream=1, ts=23) \
    + chunk(6, 9, b"\x27\x01\x00\x00\x00" + avcc(NON_IDR), stream=1, ts=33)
set_chunk = chunk(2, 1, struct.pack(">I", 4096))
write("rtmp", "connect", b"\x01" + connect)
write("rtmp", "publish", b"\x01" + connect + create + publish)
write("rtmp", "publish-media", b"\x01" + connect + create + publish + metadata + media)
write("rtmp", "set-chunk-size", b"\x01" + set_chunk + connect)
write("rtmp", "play", b"\x01" + connect + create + chunk(4, 20, amf_str("play") + amf_num(3) + b"\x05"
                                                         + amf_str("key"), stream=1))
write("rtmp", "handshake", b"\x00\x03" + bytes(1536) + bytes(1536))

# codec: VP8 and H.264 payloads of the routing core's tests.
for name, payload in {
    "vp8-key": bytes([0x10, 0x00, 0x9d, 0x01, 0x2a, 0xaa]),
    "vp8-delta": bytes([0x10, 0x01, 0xbb]),
    "vp8-extended": bytes([0x90, 0xf0, 0x80, 0x01, 0x05, 0x60, 0x00, 0x9d]),
    "h264-stap-sps-pps": bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]),
    "h264-fu-idr-start": bytes([0x7c, 0x85, 0x88, 0x84]),
    "h264-non-idr": NON_IDR,
}.items():
    write("codec", name, payload)


# rtp_rewrite: setup byte, then 8-byte operations (see the target); op 6 subscribes.
def rtp(seq, ts, payload, marker=False, layer=0, ssrc=0):
    op = 0 | (0x80 if marker else 0)
    s = struct.pack(">H", seq)
    t = struct.pack(">I", ts)
    return bytes([op, layer, ssrc]) + s + t[:2] + bytes([len(payload)]) + payload


def op(kind, a=0, b=0, c=0, d=0, e=0, f=0, g=0):
    return bytes([kind, a, b, c, d, e, f, g])


def advance(ms):
    return op(5, 0, ms >> 8, ms & 0xff)


for label, setup, key, delta in (
    ("vp8", 0, bytes([0x10, 0x00, 0x9d, 0x01, 0x2a]), bytes([0x10, 0x01, 0xbb])),
    ("h264", 1, bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]) + bytes([0x65, 0x88]), NON_IDR),
    ("opus", 2, bytes([0xfc, 0xff, 0xfe]), bytes([0xfc, 0xff, 0xfe])),
):
    script = op(6, 1) + rtp(100, 0, key, True)
    for i in range(1, 6):
        script += advance(33) + rtp(100 + i, i * 3000, delta, True)
    script += op(8, 1, 0) + rtp(103, 9000, delta) + rtp(50, 0, delta) + rtp(7, 5, key, True, ssrc=1)
    script += op(6, 2) + op(7, 1, 0) + advance(600) + op(6, 1)
    write("rtp_rewrite", label, bytes([setup]) + script)
write("rtp_rewrite", "vp8-simulcast", bytes([0x08]) + op(6, 1) + rtp(1, 0, bytes([0x10, 0x00, 0x9d]), True, 0)
      + rtp(1, 0, bytes([0x10, 0x00, 0x9d]), True, 1, 1) + op(7, 1, 1) + advance(100)
      + rtp(2, 3000, bytes([0x10, 0x00, 0x9d]), True, 1, 1))

# shard: STUN binding request/success, RFC 4571 frames, RTCP feedback.
def stun(kind, attrs):
    body = b""
    for t, v in attrs:
        body += struct.pack(">HH", t, len(v)) + v + bytes(-len(v) % 4)
    return struct.pack(">HH", kind, len(body)) + b"\x21\x12\xa4\x42" + bytes(range(12)) + body


write("shard", "stun-request", stun(1, [(6, b"local:remote"), (0x24, b"\x6e\x00\x1e\xff")]))
write("shard", "stun-success", stun(0x101, [(0x20, b"\x00\x01\x13\x89\x5e\x12\xa4\x43")]))
write("shard", "rfc4571-frames", struct.pack(">H", 20) + stun(1, [])[:20] + struct.pack(">H", 3) + b"abc")
pli = struct.pack(">BBHII", 0x81, 206, 2, 1, 0x1234)
nack = struct.pack(">BBHIIHH", 0x81, 205, 3, 1, 0x1234, 100, 0x0005)
remb = struct.pack(">BBHII", 0x8f, 206, 5, 1, 0) + b"REMB" + bytes([1, 0x0b, 0x3d, 0x09]) + struct.pack(">I", 0x1234)
rr = struct.pack(">BBHI", 0x81, 201, 7, 1) + struct.pack(">IIIIII", 0x1234, 0, 100, 0, 0, 0)
write("shard", "rtcp-pli", pli)
write("shard", "rtcp-nack", nack)
write("shard", "rtcp-rr-remb", rr + remb)

# rtsp: mode 0 stream names, 1 video (record, then length-prefixed access units), 2 audio.
write("rtsp", "select", b"\x00video/H264\naudio/mpeg4-generic\naudio/PCMU\n")
write("rtsp", "select-h265", b"\x00video/H265\naudio/PCMA\n")
rec = record(SPS_BASE, PPS)
au = avcc(IDR)
write("rtsp", "video", b"\x01" + bytes([len(rec)]) + rec + struct.pack(">H", len(au)) + au
      + struct.pack(">H", 8) + avcc(NON_IDR))
config, frames = aac["sine440_48000_mono"]
write("rtsp", "audio-aac", b"\x02" + bytes([len(config) + 1, 0]) + config
      + b"".join(struct.pack(">H", len(fr)) + fr for fr in frames[1:3]))
write("rtsp", "audio-pcmu", b"\x02\x02\x80\x08" + struct.pack(">H", 160) + bytes(range(160)))

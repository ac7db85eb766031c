//! Tests of the ingest media pipeline: AAC to Opus, timelines, reconnects and A/V alignment.

use super::*;

#[test]
fn audio_before_its_config_closes_and_other_formats_are_ignored() {
    let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
    let mut out = Vec::new();
    assert_eq!(
        media
            .push_audio(Instant::now(), 0, &[0xaf, 1, 0x21], &mut out)
            .err(),
        Some(MediaError::NoAudioConfig)
    );
    // MP3 is skipped, and so is everything after it.
    assert!(matches!(
        media.push_audio(Instant::now(), 0, &[0x2f, 0xff], &mut out),
        Ok(Announce::Nothing)
    ));
    assert!(matches!(
        media.push_audio(Instant::now(), 0, &[0xaf, 1, 0x21], &mut out),
        Ok(Announce::Nothing)
    ));
}

#[test]
fn aac_becomes_opus_packets_on_the_stream_timeline() {
    let (config, frames) =
        super::super::audio::tests::adts_frames(super::super::audio::tests::SINE_48K_MONO);
    let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
    let mut out = Vec::new();
    let mut header = vec![0xaf, 0];
    header.extend(&config);
    assert!(matches!(
        media.push_audio(Instant::now(), 500, &header, &mut out),
        Ok(Announce::Codec { ref codec, .. }) if codec.mime_type == "audio/opus"
    ));
    for (i, frame) in frames.iter().enumerate() {
        let mut tag = vec![0xaf, 1];
        tag.extend(*frame);
        let ms = 500 + (i * 1024 * 1000 / 48_000) as u32;
        media
            .push_audio(Instant::now(), ms, &tag, &mut out)
            .unwrap();
    }
    assert!(out.len() >= 45, "{} packets", out.len());
    assert_eq!(out[0].timestamp, 500 * 48);
    assert!(
        out.windows(2)
            .all(|w| w[1].timestamp == w[0].timestamp + 960)
    );
}

/// FLV tags of one encoder session: AVC and AAC headers, then `frames` video frames at
/// 30 fps and the AAC frames of the same span, all from RTMP time `start_ms`; each AAC
/// frame arrives `audio_late` after the video frame it follows.
fn session(
    media: &mut MediaPipeline,
    at: Instant,
    start_ms: u32,
    frames_count: u32,
    audio_late: std::time::Duration,
) -> Vec<RtpPacket> {
    use crate::ingest::avc::tests::{PPS, SPS_HIGH_720P, record};
    let (config, _) =
        super::super::audio::tests::adts_frames(super::super::audio::tests::SINE_48K_MONO);
    let mut out = Vec::new();
    let mut header = vec![0x17, 0, 0, 0, 0];
    header.extend(record(SPS_HIGH_720P, PPS));
    media.push_video(at, start_ms, &header, &mut out).unwrap();
    let mut audio_header = vec![0xaf, 0];
    audio_header.extend(&config);
    media
        .push_audio(at, start_ms, &audio_header, &mut out)
        .unwrap();
    out.extend(frames(media, at, start_ms, frames_count, audio_late));
    out
}

/// The media of [`session`] without its sequence headers: `frames` video frames at 30 fps
/// from RTMP time `start_ms`, arriving in real time from `at`, and the AAC frames of the
/// same span.
fn frames(
    media: &mut MediaPipeline,
    at: Instant,
    start_ms: u32,
    frames: u32,
    audio_late: std::time::Duration,
) -> Vec<RtpPacket> {
    use crate::ingest::avc::tests::avcc;
    let (_, aac) =
        super::super::audio::tests::adts_frames(super::super::audio::tests::SINE_48K_MONO);
    let mut out = Vec::new();
    let mut next_audio = 0;
    for i in 0..frames {
        let ms = start_ms + i * 1000 / 30;
        let now = at + std::time::Duration::from_millis(u64::from(ms - start_ms));
        let mut tag = vec![if i == 0 { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        tag.extend(avcc(&[&[if i == 0 { 0x65 } else { 0x41 }, 1, 2, 3]]));
        media.push_video(now, ms, &tag, &mut out).unwrap();
        while next_audio < aac.len() && (next_audio * 1024 * 1000 / 48_000) as u32 <= ms - start_ms
        {
            let mut tag = vec![0xaf, 1];
            tag.extend(aac[next_audio]);
            let at = start_ms + (next_audio * 1024 * 1000 / 48_000) as u32;
            media
                .push_audio(now + audio_late, at, &tag, &mut out)
                .unwrap();
            next_audio += 1;
        }
    }
    out
}

#[test]
fn a_jump_in_the_encoder_timeline_is_rebased_equally_for_audio_and_video() {
    // The encoder's clock steps back to 0, or ahead by an hour, between two frames.
    for (jump, after_ms) in [("backward", 0), ("forward", 3_600_000)] {
        let start = Instant::now();
        let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
        // One second each side of the jump (the AAC test data is one second long).
        let mut packets = session(&mut media, start, 60_000, 30, std::time::Duration::ZERO);
        let resumed_at = start + std::time::Duration::from_millis(1_000);
        let first_after = packets.len();
        packets.extend(frames(
            &mut media,
            resumed_at,
            after_ms,
            30,
            std::time::Duration::ZERO,
        ));
        let video_pt = packets[0].payload_type;
        let video = by_payload_type(&packets, video_pt);
        for pair in video.windows(2) {
            let step = pair[1].timestamp.wrapping_sub(pair[0].timestamp) as i32;
            assert!(
                (0..=40 * 90).contains(&step),
                "{jump}: video RTP timestamp stepped by {step}"
            );
        }
        let audio = by_payload_type(&packets, 111);
        for pair in audio.windows(2) {
            assert_eq!(
                pair[1].timestamp.wrapping_sub(pair[0].timestamp),
                960,
                "{jump}: audio RTP timestamps continue 20 ms apart"
            );
        }
        // The first frame after the jump is placed where real time says, and the audio of
        // the same encoder instant with it (lip sync holds).
        let video_after = packets[first_after..]
            .iter()
            .find(|p| p.payload_type == video_pt)
            .unwrap();
        assert_eq!(video_after.timestamp, 61_000 * 90, "{jump}");
        assert_eq!(video_after.sampled_at, Some(resumed_at), "{jump}");
        let audio_after = packets[first_after..]
            .iter()
            .find(|p| p.payload_type == 111)
            .unwrap();
        let skew_ms = i64::from(audio_after.timestamp / 48) - 61_000;
        assert!(
            skew_ms.abs() <= 25,
            "{jump}: audio placed {skew_ms} ms from the video of the same instant"
        );
    }
}

fn by_payload_type(packets: &[RtpPacket], payload_type: u8) -> Vec<&RtpPacket> {
    packets
        .iter()
        .filter(|p| p.payload_type == payload_type)
        .collect()
}

#[test]
fn a_reconnected_encoder_continues_the_same_sources_with_audio_and_video_aligned() {
    let start = Instant::now();
    let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
    // The first session's last frame is at 966 ms; the connection is found dead 5 s later.
    let first = session(&mut media, start, 0, 30, std::time::Duration::ZERO);
    let carry = media.park(start + std::time::Duration::from_secs(6));
    // The new encoder process starts its clock anew, at an arbitrary RTMP time.
    let mut media = MediaPipeline::resume(
        Arc::default(),
        Origin::Rtmp,
        carry,
        start + std::time::Duration::from_millis(2_966),
    );
    let second = session(
        &mut media,
        start + std::time::Duration::from_millis(2_966),
        7_000,
        30,
        std::time::Duration::ZERO,
    );
    let (video_pt, audio_pt) = (first[0].payload_type, 111);
    for pt in [video_pt, audio_pt] {
        let (a, b) = (by_payload_type(&first, pt), by_payload_type(&second, pt));
        assert!(!a.is_empty() && !b.is_empty(), "payload type {pt}");
        assert_eq!(a[0].ssrc, b[0].ssrc, "the same source continues");
        let last = a.last().unwrap();
        assert_eq!(
            b[0].sequence_number,
            last.sequence_number.wrapping_add(1),
            "contiguous sequence numbers"
        );
    }
    // Both tracks resume at the same instant of the stream's timeline: the last one of the
    // first session plus the 2 s the encoder was away.
    let video = by_payload_type(&second, video_pt);
    let audio = by_payload_type(&second, audio_pt);
    let last_ms_before = 29 * 1000 / 30;
    assert_eq!(
        i64::from(video[0].timestamp),
        (last_ms_before + 2_000) * 90,
        "video resumes 2 s after its last frame"
    );
    let audio_resume_ms = i64::from(audio[0].timestamp) / 48;
    assert!(
        (audio_resume_ms - (last_ms_before + 2_000)).abs() <= 1,
        "audio resumes at {audio_resume_ms} ms, video at {} ms",
        last_ms_before + 2_000
    );
    assert!(audio[0].marker, "a new talk spurt");
    // The stream clock continues too: the resumed frames are placed at the restart.
    assert_eq!(
        video[0].sampled_at,
        Some(start + std::time::Duration::from_millis(2_966))
    );
}

/// Sender reports are derived from `sampled_at`: audio and video of the same encoder
/// moment must carry the same instant, however late the audio path delivers them.
#[test]
fn audio_and_video_are_placed_on_one_clock_whatever_their_arrival_skew() {
    let start = Instant::now();
    let mut media = MediaPipeline::new(Arc::default(), Origin::Rtmp);
    let packets = session(
        &mut media,
        start,
        1_000,
        60,
        std::time::Duration::from_millis(80),
    );
    let video_pt = packets[0].payload_type;
    let mut seen = [0, 0];
    for packet in &packets {
        let (rate, kind) = if packet.payload_type == video_pt {
            (90, 0)
        } else {
            (48, 1)
        };
        let timeline_ms = u64::from(packet.timestamp / rate);
        let sampled = packet.sampled_at.expect("every media packet is placed");
        let placed_ms = (sampled - start).as_millis() as u64;
        // The video's first frame (timeline 1000 ms) arrived at `start`.
        assert!(
            placed_ms.abs_diff(timeline_ms - 1_000) <= 1,
            "{} packet of {timeline_ms} ms placed at {placed_ms} ms",
            ["video", "audio"][kind]
        );
        seen[kind] += 1;
    }
    assert!(seen[0] >= 60 && seen[1] >= 40, "{seen:?}");
}

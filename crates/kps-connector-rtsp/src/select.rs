//! Which frames become records: the output mode (`frames` / `keyframes`), the `max_fps` cap,
//! and the rule that keeps the published records decodable.
//!
//! A P frame only decodes if every reference frame since the last IDR was published too. So
//! after a frame is left out (sampled away, too large, or lost on the network) nothing but a
//! disposable frame is published until the next keyframe. With `output: frames` and a `max_fps`
//! below the camera's rate this means keyframes only; the README says so.

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it.
    Publish,
    /// Left out: waiting for a keyframe (the start of the stream, after loss or after a skip).
    AwaitingKeyframe,
    /// Left out: not a keyframe and the output is `keyframes`.
    NotKeyframe,
    /// Left out by the `max_fps` cap.
    RateLimited,
}

/// The facts about a frame the selection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameFacts {
    /// An IDR frame (with SPS/PPS in front).
    pub keyframe: bool,
    /// No later frame refers to it (`nal_ref_idc == 0`).
    pub disposable: bool,
    /// RTP packets were lost just before it.
    pub after_loss: bool,
    /// Its RTP timestamp, in `clock_rate` ticks since the stream began.
    pub pts: i64,
}

/// The frame selection of one RTSP session.
#[derive(Debug, Clone)]
pub struct Selector {
    keyframes_only: bool,
    limiter: Option<RateLimiter>,
    /// Every reference frame since the last published keyframe was published.
    chain_intact: bool,
}

impl Selector {
    /// A selection for `keyframes_only` output, capped at `max_fps` for a stream whose RTP
    /// clock runs at `clock_rate` Hz.
    pub fn new(keyframes_only: bool, max_fps: Option<f64>, clock_rate: u32) -> Self {
        Self {
            keyframes_only,
            limiter: max_fps.map(|fps| RateLimiter::new(fps, clock_rate)),
            chain_intact: false,
        }
    }

    /// Decides about the next frame.
    pub fn decide(&mut self, frame: FrameFacts) -> Verdict {
        if frame.after_loss {
            self.chain_intact = false;
        }
        let verdict = if self.keyframes_only && !frame.keyframe {
            Verdict::NotKeyframe
        } else if !frame.keyframe && !self.chain_intact {
            Verdict::AwaitingKeyframe
        } else if self
            .limiter
            .as_mut()
            .is_some_and(|limiter| !limiter.admit(frame.pts))
        {
            Verdict::RateLimited
        } else {
            Verdict::Publish
        };
        match verdict {
            Verdict::Publish if frame.keyframe => self.chain_intact = true,
            Verdict::Publish | Verdict::NotKeyframe => {}
            Verdict::AwaitingKeyframe | Verdict::RateLimited => {
                if !frame.disposable {
                    self.chain_intact = false;
                }
            }
        }
        verdict
    }

    /// A frame that was selected could not be published (too large): the frames that refer to
    /// it must not be published either.
    pub fn dropped_after_selection(&mut self, frame: FrameFacts) {
        if !frame.disposable {
            self.chain_intact = false;
        }
    }
}

/// The `max_fps` cap: a generic cell rate algorithm on RTP timestamps. A frame is admitted when
/// its timestamp is no earlier than the theoretical arrival time minus half an interval, so a
/// camera's jitter does not halve the rate, while over any window of `w` seconds at most
/// `w * max_fps + 1.5` frames pass.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Ticks between frames at the cap.
    interval: f64,
    /// The theoretical arrival time of the next frame, in ticks; `None` before the first.
    next: Option<f64>,
}

impl RateLimiter {
    /// A cap of `max_fps` frames per second for timestamps in `clock_rate` Hz ticks.
    pub fn new(max_fps: f64, clock_rate: u32) -> Self {
        Self {
            interval: f64::from(clock_rate) / max_fps,
            next: None,
        }
    }

    /// Whether a frame stamped `pts` passes.
    pub fn admit(&mut self, pts: i64) -> bool {
        let t = pts as f64;
        let next = match self.next {
            // A timestamp far behind the schedule (a camera clock reset): start over.
            Some(next) if next - t <= 2.0 * self.interval => next,
            _ => {
                self.next = Some(t + self.interval);
                return true;
            }
        };
        if t < next - self.interval / 2.0 {
            return false;
        }
        self.next = Some(next.max(t) + self.interval);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCK: u32 = 90_000;

    fn frame(i: i64, fps: i64, gop: i64) -> FrameFacts {
        FrameFacts {
            keyframe: i % gop == 0,
            disposable: false,
            after_loss: false,
            pts: i * i64::from(CLOCK) / fps,
        }
    }

    fn published(selector: &mut Selector, frames: impl Iterator<Item = FrameFacts>) -> Vec<i64> {
        frames
            .filter_map(|f| (selector.decide(f) == Verdict::Publish).then_some(f.pts))
            .collect()
    }

    #[test]
    fn frames_start_at_the_first_keyframe() {
        let mut s = Selector::new(false, None, CLOCK);
        let got = published(&mut s, (10..60).map(|i| frame(i, 25, 25)));
        assert_eq!(got.len(), 35, "frames 25..60");
        assert_eq!(got[0], frame(25, 25, 25).pts);
    }

    #[test]
    fn keyframes_only() {
        let mut s = Selector::new(true, None, CLOCK);
        let got = published(&mut s, (0..100).map(|i| frame(i, 25, 10)));
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn loss_waits_for_the_next_keyframe() {
        let mut s = Selector::new(false, None, CLOCK);
        let mut frames: Vec<FrameFacts> = (0..50).map(|i| frame(i, 25, 25)).collect();
        frames[10].after_loss = true;
        let got = published(&mut s, frames.into_iter());
        assert_eq!(got.len(), 10 + 25, "frames 0..10 and 25..50");
    }

    #[test]
    fn the_rate_limiter_keeps_the_cap_over_any_window() {
        for (fps, cap) in [
            (25, 1.0),
            (25, 2.0),
            (25, 10.0),
            (30, 7.5),
            (25, 25.0),
            (25, 0.5),
        ] {
            let mut limiter = RateLimiter::new(cap, CLOCK);
            let admitted: Vec<i64> = (0..fps * 60)
                .map(|i| i * i64::from(CLOCK) / fps)
                .filter(|&pts| limiter.admit(pts))
                .collect();
            let expected = (cap * 60.0).min(fps as f64 * 60.0);
            assert!(
                (admitted.len() as f64 - expected).abs() <= 60.0 / 60.0 + 1.0,
                "fps {fps} cap {cap}: {} admitted, expected about {expected}",
                admitted.len()
            );
            // Any one-second window holds at most cap + 1.5 frames.
            for (i, &start) in admitted.iter().enumerate() {
                let in_window = admitted[i..]
                    .iter()
                    .take_while(|&&t| t < start + i64::from(CLOCK))
                    .count();
                assert!(
                    in_window as f64 <= cap + 1.5,
                    "fps {fps} cap {cap}: {in_window} in a second"
                );
            }
        }
    }

    #[test]
    fn a_cap_at_the_camera_rate_passes_every_frame_despite_jitter() {
        let mut limiter = RateLimiter::new(25.0, CLOCK);
        let jitter = [0, 300, -200, 100, -400, 0];
        let admitted = (0..250)
            .filter(|&i| limiter.admit(i * 3600 + jitter[(i % 6) as usize]))
            .count();
        assert_eq!(admitted, 250);
    }

    #[test]
    fn frames_with_a_cap_below_the_rate_publish_decodable_runs_only() {
        // 25 fps, a keyframe every 5 frames, at most 2 fps: only keyframes can pass.
        let mut s = Selector::new(false, Some(2.0), CLOCK);
        let frames: Vec<FrameFacts> = (0..250).map(|i| frame(i, 25, 5)).collect();
        let mut published = 0;
        for f in frames {
            if s.decide(f) == Verdict::Publish {
                published += 1;
                assert!(f.keyframe, "a P frame after a skipped one would not decode");
            }
        }
        assert!(
            (19..=22).contains(&published),
            "{published} in 10 s at 2 fps"
        );
    }

    #[test]
    fn a_camera_clock_reset_starts_the_schedule_over() {
        let mut limiter = RateLimiter::new(1.0, CLOCK);
        assert!(limiter.admit(1_000_000));
        assert!(!limiter.admit(1_000_000 + 3600));
        assert!(limiter.admit(0), "far behind the schedule: start over");
        assert!(!limiter.admit(3600));
    }
}

//! The record a frame becomes: the frame itself (`envelope: none`, zero-copy) or a JSON object
//! `{"pts":..,"keyframe":..,"codec":"h264","width":..,"height":..,"data":"<base64>"}`, written
//! straight into one buffer of the exact size.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::params::Envelope;

/// What the JSON envelope says about a frame besides its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// RTP timestamp in ticks of the 90 kHz H.264 clock since the session began.
    pub pts: i64,
    /// An IDR frame (starting with SPS and PPS).
    pub keyframe: bool,
    /// Picture width in pixels (0 when the camera has not said).
    pub width: u32,
    /// Picture height in pixels (0 when the camera has not said).
    pub height: u32,
}

/// The codec name in the JSON envelope.
pub const CODEC: &str = "h264";

/// Wraps `frame` (Annex B) as `envelope` says.
pub fn wrap(envelope: Envelope, frame: Vec<u8>, meta: FrameMeta) -> Bytes {
    match envelope {
        Envelope::None => Bytes::from(frame),
        Envelope::Json => json(&frame, meta),
    }
}

fn json(frame: &[u8], meta: FrameMeta) -> Bytes {
    let head = format!(
        r#"{{"pts":{},"keyframe":{},"codec":"{CODEC}","width":{},"height":{},"data":""#,
        meta.pts, meta.keyframe, meta.width, meta.height
    );
    let encoded_len = frame.len().div_ceil(3) * 4;
    let mut out = Vec::with_capacity(head.len() + encoded_len + 2);
    out.extend_from_slice(head.as_bytes());
    let start = out.len();
    out.resize(start + encoded_len, 0);
    // The buffer has exactly the encoded length, so this cannot fail.
    let written = STANDARD
        .encode_slice(frame, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + written);
    out.extend_from_slice(b"\"}");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_the_frame_itself() {
        let frame = vec![0, 0, 0, 1, 0x65, 1, 2, 3];
        let meta = FrameMeta {
            pts: 0,
            keyframe: true,
            width: 1,
            height: 1,
        };
        assert_eq!(
            wrap(Envelope::None, frame.clone(), meta),
            Bytes::from(frame)
        );
    }

    #[test]
    fn json_has_every_field_and_the_data_in_base64() {
        for len in [0usize, 1, 2, 3, 4, 1000, 1001, 1002] {
            let frame: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let meta = FrameMeta {
                pts: 3600 * 7,
                keyframe: len % 2 == 0,
                width: 320,
                height: 240,
            };
            let record = wrap(Envelope::Json, frame.clone(), meta);
            let value: serde_json::Value = serde_json::from_slice(&record).unwrap();
            assert_eq!(value["pts"], 25200);
            assert_eq!(value["keyframe"], len % 2 == 0);
            assert_eq!(value["codec"], "h264");
            assert_eq!(value["width"], 320);
            assert_eq!(value["height"], 240);
            let data = STANDARD.decode(value["data"].as_str().unwrap()).unwrap();
            assert_eq!(data, frame);
            assert_eq!(value.as_object().unwrap().len(), 6);
        }
    }
}

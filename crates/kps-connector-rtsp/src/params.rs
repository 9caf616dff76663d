//! One RTSP stream's parameters (its metadata) and the rules the type cannot express.

use kps_connector_core::{ConnectorError, ConnectorResult, PasswordSource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The largest frame published by default: under NATS's default `max_payload` (1 MiB), with room
/// for the TransportMessage framing.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1_000_000;

/// An RTSP ingress stream's parameters.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RtspParams {
    /// The camera or server, `rtsp://host[:port]/path`. Credentials never go in the URL: use
    /// `username` with `password_file` or `password_env`.
    pub url: String,
    /// How RTP travels: `tcp` (interleaved on the RTSP connection, the default) or `udp`.
    #[serde(default)]
    pub transport: RtpTransport,
    /// `frames` (every access unit, the default) or `keyframes` (IDR frames only).
    #[serde(default)]
    pub output: Output,
    /// At most this many frames per second are published (e.g. 1 for snapshots); sampled by
    /// the frames' RTP timestamps. Unset: every frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<f64>,
    /// `none` (the default: the frame as an H.264 Annex B byte stream) or `json`
    /// (`{pts, keyframe, codec, width, height, data}` with base64 `data`).
    #[serde(default)]
    pub envelope: Envelope,
    /// The RTSP user, when the camera asks for authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the RTSP password (trailing newline ignored), e.g. a mounted secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable holding the RTSP password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Frames larger than this many bytes are skipped (counted and alerted) instead of failing
    /// the publish; keep it under the NATS server's `max_payload`. Default 1000000.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
}

fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}

/// How RTP packets travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RtpTransport {
    /// Interleaved on the RTSP TCP connection.
    #[default]
    Tcp,
    /// RTP/RTCP on UDP ports (no reordering: fine on a LAN).
    Udp,
}

/// Which frames become records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Every access unit (from the first keyframe on, so the records always decode).
    #[default]
    Frames,
    /// IDR frames only, each with SPS/PPS in front.
    Keyframes,
}

/// How a frame is wrapped in its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// The frame itself, H.264 Annex B.
    #[default]
    None,
    /// A JSON object `{pts, keyframe, codec, width, height, data}`, `data` in base64.
    Json,
}

impl RtspParams {
    /// The password source built from `password_file` / `password_env`.
    pub fn password(&self) -> PasswordSource {
        PasswordSource {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }

    /// Checks what the type cannot express; returns the parsed URL.
    pub fn validate(&self) -> ConnectorResult<url::Url> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| ConnectorError::invalid("url", format!("not a URL: {e}")))?;
        if url.scheme() != "rtsp" {
            return Err(ConnectorError::invalid(
                "url",
                format!("the scheme must be rtsp, not {}", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConnectorError::invalid("url", "the URL has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConnectorError::invalid(
                "url",
                "credentials do not go in the URL: use username with password_file or password_env",
            ));
        }
        if let Some(fps) = self.max_fps
            && !(fps.is_finite() && fps > 0.0)
        {
            return Err(ConnectorError::invalid(
                "max_fps",
                "must be a number greater than 0",
            ));
        }
        if self.max_frame_bytes == 0 {
            return Err(ConnectorError::invalid(
                "max_frame_bytes",
                "must be greater than 0",
            ));
        }
        let password = self.password();
        password.validate()?;
        if password.is_set() && self.username.as_deref().is_none_or(str::is_empty) {
            return Err(ConnectorError::invalid(
                "username",
                "required when password_file or password_env is given",
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kps_connector_core::params::parse_params;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> ConnectorResult<RtspParams> {
        parse_params::<RtspParams>(v.as_object().unwrap()).and_then(|p| {
            p.validate()?;
            Ok(p)
        })
    }

    fn field(e: ConnectorError) -> String {
        match e {
            ConnectorError::InvalidParameter { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let p = parse(json!({"url": "rtsp://127.0.0.1:8554/test"})).unwrap();
        assert_eq!(p.transport, RtpTransport::Tcp);
        assert_eq!(p.output, Output::Frames);
        assert_eq!(p.envelope, Envelope::None);
        assert_eq!(p.max_fps, None);
        assert_eq!(p.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
    }

    #[test]
    fn all_fields() {
        let p = parse(json!({
            "url": "rtsp://cam/x", "transport": "udp", "output": "keyframes", "max_fps": 1,
            "envelope": "json", "username": "u", "password_env": "PW", "max_frame_bytes": 5
        }))
        .unwrap();
        assert_eq!(p.transport, RtpTransport::Udp);
        assert_eq!(p.output, Output::Keyframes);
        assert_eq!(p.max_fps, Some(1.0));
        assert_eq!(p.envelope, Envelope::Json);
        assert_eq!(
            parse(json!({"url": "rtsp://cam/x", "max_fps": 0.5}))
                .unwrap()
                .max_fps,
            Some(0.5)
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (json!({}), "url"),
            (json!({"url": "not a url"}), "url"),
            (json!({"url": "http://cam/x"}), "url"),
            (json!({"url": "rtsp://admin:pw@cam/x"}), "url"),
            (
                json!({"url": "rtsp://cam/x", "transport": "sctp"}),
                "transport",
            ),
            (json!({"url": "rtsp://cam/x", "output": "all"}), "output"),
            (
                json!({"url": "rtsp://cam/x", "envelope": "xml"}),
                "envelope",
            ),
            (json!({"url": "rtsp://cam/x", "max_fps": 0}), "max_fps"),
            (json!({"url": "rtsp://cam/x", "max_fps": -2}), "max_fps"),
            (
                json!({"url": "rtsp://cam/x", "max_frame_bytes": 0}),
                "max_frame_bytes",
            ),
            (
                json!({"url": "rtsp://cam/x", "password_env": "PW"}),
                "username",
            ),
            (
                json!({"url": "rtsp://cam/x", "username": "u", "password_env": "A", "password_file": "/b"}),
                "password_file",
            ),
            (json!({"url": "rtsp://cam/x", "colour": "red"}), "colour"),
        ];
        for (metadata, expected) in cases {
            let err = parse(metadata.clone()).unwrap_err();
            assert_eq!(field(err), expected, "{metadata}");
        }
    }
}

//! Decoding the driver's frames: output chunks keep their text JSON-encoded (the hot path, passed
//! to clients as is, repaired only when the driver's escaping left it invalid); the rest are
//! [`FromDriver`] messages.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::messages::FromDriver;
use capsule_protocol::execute::OutputStream;
use capsule_protocol::frame::{self, FrameError};

/// What the reader task reports.
#[derive(Debug)]
pub enum DriverEvent {
    /// An output chunk whose text is still JSON-encoded, to be passed through to clients as is.
    Output {
        stream: OutputStream,
        text: Box<RawValue>,
    },
    Message(FromDriver),
    /// A frame from the driver could not be read (oversized or malformed) and was skipped whole;
    /// the executor fails the running execution with it, so the loss reaches the client.
    FrameLost {
        reason: String,
    },
    /// The frame stream ended: the interpreter exited or closed its frame fd.
    Exited,
}

/// An output frame read without unescaping its text (the common, hot case).
#[derive(Debug, Deserialize)]
struct RawOutputFrame<'a> {
    stream: OutputStream,
    #[serde(borrow)]
    text: &'a RawValue,
}

/// Prefix the driver writes on every output frame.
const OUTPUT_FRAME_PREFIX: &[u8] = br#"{"type":"output","#;

/// Where the driver puts the text of an output frame: `...,"text":"<escaped>"}`.
const OUTPUT_TEXT_MARKER: &[u8] = br#","text":""#;

/// Decodes one frame body from the driver: an output chunk (text kept JSON-encoded) or a message.
/// Bytes that are neither are a [`FrameError::Malformed`], never a panic.
pub fn decode_driver_frame(body: &[u8]) -> std::result::Result<DriverEvent, FrameError> {
    if let Some(output) = decode_raw_output(body) {
        return Ok(output);
    }
    frame::decode::<FromDriver>(body).map(DriverEvent::Message)
}

fn decode_raw_output(body: &[u8]) -> Option<DriverEvent> {
    if !body.starts_with(OUTPUT_FRAME_PREFIX) {
        return None;
    }
    if let Ok(frame) = serde_json::from_slice::<RawOutputFrame<'_>>(body) {
        return Some(DriverEvent::Output {
            stream: frame.stream,
            text: frame.text.to_owned(),
        });
    }
    // The driver escapes only backslash, quote, \n, \t and \r: text holding another control
    // character or invalid UTF-8 (bytes written to sys.stdout.buffer) is repaired here.
    let start = body
        .windows(OUTPUT_TEXT_MARKER.len())
        .position(|w| w == OUTPUT_TEXT_MARKER)?;
    let head = &body[..start];
    let escaped = body.get(start + OUTPUT_TEXT_MARKER.len()..body.len().checked_sub(2)?)?;
    if !body.ends_with(b"\"}") {
        return None;
    }
    let mut header = head.to_vec();
    header.push(b'}');
    let stream = serde_json::from_slice::<OutputHead>(&header).ok()?.stream;
    Some(DriverEvent::Output {
        stream,
        text: repair_text(escaped)?,
    })
}

#[derive(Debug, Deserialize)]
struct OutputHead {
    stream: OutputStream,
}

/// Turns driver-escaped text that is not valid JSON into a valid JSON string: invalid UTF-8 becomes
/// U+FFFD and remaining control characters become `\u00XX` escapes.
fn repair_text(escaped: &[u8]) -> Option<Box<RawValue>> {
    let text = String::from_utf8_lossy(escaped);
    let mut json = String::with_capacity(text.len() + 16);
    json.push('"');
    for ch in text.chars() {
        if (ch as u32) < 0x20 {
            json.push_str(&format!("\\u{:04x}", ch as u32));
        } else {
            json.push(ch);
        }
    }
    json.push('"');
    RawValue::from_string(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_pass_their_text_through_unparsed() {
        let body = br#"{"type":"output","id":"e1","stream":"stdout","text":"a\nb \"q\""}"#;
        match decode_raw_output(body) {
            Some(DriverEvent::Output { stream, text }) => {
                assert_eq!(stream, OutputStream::Stdout);
                assert_eq!(text.get(), r#""a\nb \"q\"""#);
            }
            other => panic!("{other:?}"),
        }
        assert!(decode_raw_output(br#"{"type":"result"}"#).is_none());
    }

    #[test]
    fn control_characters_and_invalid_utf8_are_repaired() {
        let body = b"{\"type\":\"output\",\"id\":\"e\",\"stream\":\"stderr\",\"text\":\"a\x01b\xff\\\"q\\\"\"}";
        match decode_raw_output(body) {
            Some(DriverEvent::Output { stream, text }) => {
                assert_eq!(stream, OutputStream::Stderr);
                let decoded: String = serde_json::from_str(text.get()).unwrap();
                assert_eq!(decoded, "a\u{1}b\u{fffd}\"q\"");
            }
            other => panic!("{other:?}"),
        }
    }
}

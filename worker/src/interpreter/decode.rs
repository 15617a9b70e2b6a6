//! Decoding the driver's frames: output chunks keep their text JSON-encoded (the hot path, passed
//! to clients as is, repaired only when the driver's escaping left it invalid); the rest are
//! [`FromDriver`] messages.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json_string::JsonString;
use super::messages::FromDriver;
use capsule_protocol::execute::OutputStream;
use capsule_protocol::frame::{self, FrameError};

/// What the reader task reports.
#[derive(Debug)]
pub enum DriverEvent {
    /// An output chunk whose text is still JSON-encoded, to be passed through to clients as is.
    Output {
        stream: OutputStream,
        text: JsonString,
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

/// How far into a frame the fast path looks for the text marker (the fields before it are short).
const OUTPUT_HEAD_BYTES: usize = 1024;

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
    // The driver's layout, text last: its head is parsed, its text checked in one fast pass.
    let head_end = body.len().min(OUTPUT_HEAD_BYTES);
    if let Some((stream, escaped)) = split_output(body, head_end) {
        if let Some(text) = JsonString::from_contents(escaped) {
            return Some(DriverEvent::Output { stream, text });
        }
    }
    if let Ok(frame) = serde_json::from_slice::<RawOutputFrame<'_>>(body) {
        if let Some(text) = JsonString::from_raw(frame.text) {
            return Some(DriverEvent::Output {
                stream: frame.stream,
                text,
            });
        }
    }
    // The driver escapes only backslash, quote, \n, \t and \r: text holding another control
    // character or invalid UTF-8 (bytes written to sys.stdout.buffer) is repaired here.
    let (stream, escaped) = split_output(body, body.len())?;
    Some(DriverEvent::Output {
        stream,
        text: repair_text(escaped)?,
    })
}

/// The stream of an output frame laid out as the driver writes it, and its text still escaped
/// (without quotes); the text marker is looked for in `body[..head_end]`.
fn split_output(body: &[u8], head_end: usize) -> Option<(OutputStream, &[u8])> {
    let start = body[..head_end]
        .windows(OUTPUT_TEXT_MARKER.len())
        .position(|w| w == OUTPUT_TEXT_MARKER)?;
    let escaped = body.get(start + OUTPUT_TEXT_MARKER.len()..body.len().checked_sub(2)?)?;
    if !body.ends_with(b"\"}") {
        return None;
    }
    let mut header = body[..start].to_vec();
    header.push(b'}');
    let stream = serde_json::from_slice::<OutputHead>(&header).ok()?.stream;
    Some((stream, escaped))
}

#[derive(Debug, Deserialize)]
struct OutputHead {
    stream: OutputStream,
}

/// Turns driver-escaped text that is not valid JSON into a valid JSON string: invalid UTF-8 becomes
/// U+FFFD and remaining control characters become `\u00XX` escapes.
fn repair_text(escaped: &[u8]) -> Option<JsonString> {
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
    let raw = RawValue::from_string(json).ok()?;
    JsonString::from_raw(&raw)
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

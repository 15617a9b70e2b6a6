//! Length-prefixed JSON frames: a u32 big-endian byte length followed by that many bytes of JSON.
//!
//! Used between the worker and its Python driver, and between the worker and the sidecar. A frame
//! larger than [`MAX_FRAME_BYTES`] is refused on write and skipped on read (the stream stays in
//! sync), and a frame that is not valid JSON for the expected type is an error, never a panic.

use std::io::{Read, Write};

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body accepted or produced, in bytes (16 MiB). The execute API caps code at
/// `CAPSULE_MAX_REQUEST_BYTES` (default 1 MiB), so an execute frame always fits.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Size of the length prefix in bytes.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Most bytes reserved up front for a frame body: a header alone cannot make the reader allocate
/// [`MAX_FRAME_BYTES`]; a real large frame grows its buffer as its bytes arrive.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// What can go wrong with a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the maximum frame size of {max} bytes")]
    Oversized { size: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("frame stream closed")]
    Closed,
    #[error("frame i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the stream can still be read after this error (the bad frame was consumed whole).
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            FrameError::Oversized { .. } | FrameError::Malformed(_)
        )
    }
}

/// Encodes `value` as one frame (header + body) ready to be written.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut buffer = vec![0u8; FRAME_HEADER_BYTES];
    serde_json::to_writer(&mut buffer, value).map_err(FrameError::Malformed)?;
    let body_len = buffer.len() - FRAME_HEADER_BYTES;
    if body_len > MAX_FRAME_BYTES {
        return Err(FrameError::Oversized {
            size: body_len,
            max: MAX_FRAME_BYTES,
        });
    }
    buffer[..FRAME_HEADER_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(buffer)
}

/// Decodes a frame body (without its header).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Malformed)
}

fn checked_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, usize> {
    let size = u32::from_be_bytes(header) as usize;
    if size > MAX_FRAME_BYTES {
        Err(size)
    } else {
        Ok(size)
    }
}

/// Writes one frame to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(writer: &mut W, value: &T) -> Result<(), FrameError> {
    writer.write_all(&encode(value)?)?;
    writer.flush()?;
    Ok(())
}

/// Reads one frame body from a blocking reader. An oversized frame is skipped and reported.
pub fn read_frame_bytes<R: Read>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    match checked_len(header) {
        Ok(size) => {
            let mut body = Vec::with_capacity(size.min(INITIAL_BODY_CAPACITY));
            reader.take(size as u64).read_to_end(&mut body)?;
            if body.len() < size {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            Ok(body)
        }
        Err(size) => {
            std::io::copy(&mut reader.take(size as u64), &mut std::io::sink())?;
            Err(FrameError::Oversized {
                size,
                max: MAX_FRAME_BYTES,
            })
        }
    }
}

/// Reads and decodes one frame from a blocking reader.
pub fn read_frame<R: Read, T: DeserializeOwned>(reader: &mut R) -> Result<T, FrameError> {
    decode(&read_frame_bytes(reader)?)
}

/// Writes one frame to an async writer.
pub async fn write_frame_async<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    writer.write_all(&encode(value)?).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame body from an async reader. An oversized frame is skipped and reported.
///
/// Not cancel-safe: run it in a task of its own rather than inside `select!`.
pub async fn read_frame_bytes_async<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    match checked_len(header) {
        Ok(size) => {
            // read_to_end into spare capacity: no zero-filling of a buffer about to be overwritten.
            let mut body = Vec::with_capacity(size.min(INITIAL_BODY_CAPACITY));
            (&mut *reader)
                .take(size as u64)
                .read_to_end(&mut body)
                .await?;
            if body.len() < size {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            Ok(body)
        }
        Err(size) => {
            tokio::io::copy(&mut reader.take(size as u64), &mut tokio::io::sink()).await?;
            Err(FrameError::Oversized {
                size,
                max: MAX_FRAME_BYTES,
            })
        }
    }
}

/// Reads and decodes one frame from an async reader.
pub async fn read_frame_async<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
) -> Result<T, FrameError> {
    decode(&read_frame_bytes_async(reader).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn round_trip_sync() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &json!({"type": "ping", "n": 1})).unwrap();
        assert_eq!(&buffer[..4], &((buffer.len() - 4) as u32).to_be_bytes());
        let value: Value = read_frame(&mut buffer.as_slice()).unwrap();
        assert_eq!(value, json!({"type": "ping", "n": 1}));
    }

    #[test]
    fn oversized_frame_is_skipped_and_stream_stays_in_sync() {
        let size = MAX_FRAME_BYTES + 1;
        let mut stream = (size as u32).to_be_bytes().to_vec();
        stream.extend(std::iter::repeat_n(b' ', size));
        write_frame(&mut stream, &json!("after")).unwrap();
        let mut reader = stream.as_slice();
        let error = read_frame::<_, Value>(&mut reader).unwrap_err();
        assert!(matches!(error, FrameError::Oversized { size: s, .. } if s == size));
        assert!(error.is_recoverable());
        assert!(error.to_string().contains("exceeds the maximum frame size"));
        let next: Value = read_frame(&mut reader).unwrap();
        assert_eq!(next, json!("after"));
    }

    #[test]
    fn malformed_frame_is_a_clear_error() {
        let mut stream = 5u32.to_be_bytes().to_vec();
        stream.extend(b"{nope");
        write_frame(&mut stream, &json!(7)).unwrap();
        let mut reader = stream.as_slice();
        let error = read_frame::<_, Value>(&mut reader).unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)));
        assert!(error.to_string().starts_with("malformed frame"));
        assert_eq!(read_frame::<_, Value>(&mut reader).unwrap(), json!(7));
    }

    #[test]
    fn truncated_stream_is_closed_or_io_error() {
        let empty: &[u8] = &[];
        assert!(matches!(
            read_frame::<_, Value>(&mut &*empty),
            Err(FrameError::Closed)
        ));
        let mut cut = 10u32.to_be_bytes().to_vec();
        cut.extend(b"{}");
        assert!(matches!(
            read_frame::<_, Value>(&mut cut.as_slice()),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn encode_refuses_oversized_values() {
        let big = "x".repeat(MAX_FRAME_BYTES);
        assert!(matches!(encode(&big), Err(FrameError::Oversized { .. })));
    }

    #[tokio::test]
    async fn round_trip_async() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            for n in 0..3 {
                write_frame_async(&mut a, &json!({ "n": n })).await.unwrap();
            }
        });
        for n in 0..3 {
            let value: Value = read_frame_async(&mut b).await.unwrap();
            assert_eq!(value, json!({ "n": n }));
        }
        writer.await.unwrap();
        assert!(matches!(
            read_frame_async::<_, Value>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }
}

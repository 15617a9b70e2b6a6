//! Reads the driver's frames through one reusable buffer. A read takes whatever the pipe holds (a
//! whole output chunk, often with the frames around it), so a frame costs about one syscall and no
//! allocation; reading header and body apart cost three syscalls and a fresh, regrown body buffer
//! per output chunk.

use tokio::io::{AsyncRead, AsyncReadExt};

use capsule_protocol::frame::{FrameError, FRAME_HEADER_BYTES, MAX_FRAME_BYTES};

/// The buffer's usual size: four output chunks (≤ 64 KiB of text each, escaped) per read. It grows
/// past this only for a larger frame, as that frame's bytes arrive, and shrinks back after it.
pub const FRAME_READ_BUFFER_BYTES: usize = 256 * 1024;

/// Frames read out of an [`AsyncRead`], each handed out as a slice of the buffer.
#[derive(Debug)]
pub struct FrameBuffer<R> {
    reader: R,
    buffer: Vec<u8>,
    /// Unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> FrameBuffer<R> {
    pub fn new(reader: R) -> Self {
        FrameBuffer {
            reader,
            buffer: vec![0; FRAME_READ_BUFFER_BYTES],
            start: 0,
            end: 0,
        }
    }

    /// The next frame's body. A frame over [`MAX_FRAME_BYTES`] is skipped whole and reported as
    /// [`FrameError::Oversized`] (the stream stays in step); the end of the stream between frames is
    /// [`FrameError::Closed`] (also inside a header, as a header read whole would say), inside a
    /// body an `UnexpectedEof`.
    pub async fn next_frame(&mut self) -> Result<&[u8], FrameError> {
        if !self.fill(FRAME_HEADER_BYTES).await? {
            return Err(FrameError::Closed);
        }
        let header: [u8; FRAME_HEADER_BYTES] = self.buffer[self.start..][..FRAME_HEADER_BYTES]
            .try_into()
            .expect("header bytes");
        let size = u32::from_be_bytes(header) as usize;
        if size > MAX_FRAME_BYTES {
            self.start += FRAME_HEADER_BYTES;
            self.skip(size).await?;
            return Err(FrameError::Oversized {
                size,
                max: MAX_FRAME_BYTES,
            });
        }
        if !self.fill(FRAME_HEADER_BYTES + size).await? {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        let body = self.start + FRAME_HEADER_BYTES;
        self.start = body + size;
        Ok(&self.buffer[body..body + size])
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads until `wanted` bytes are buffered; false when the stream ends first. The buffer grows
    /// only by doubling what it already holds, so a header announcing a large frame costs no
    /// memory before its bytes come.
    async fn fill(&mut self, wanted: usize) -> Result<bool, FrameError> {
        if self.buffered() >= wanted {
            return Ok(true);
        }
        self.make_room(wanted);
        while self.buffered() < wanted {
            if self.end == self.buffer.len() {
                let grown = (self.buffer.len() * 2).min(wanted);
                self.buffer.resize(grown, 0);
            }
            let read = self.reader.read(&mut self.buffer[self.end..]).await?;
            if read == 0 {
                return Ok(false);
            }
            self.end += read;
        }
        Ok(true)
    }

    /// Moves the unread bytes to the front and gives a grown buffer back once it is not needed.
    fn make_room(&mut self, wanted: usize) {
        let unread = self.buffered();
        self.buffer.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = unread;
        let fits = wanted.max(unread) <= FRAME_READ_BUFFER_BYTES;
        if fits && self.buffer.len() > FRAME_READ_BUFFER_BYTES {
            self.buffer.truncate(FRAME_READ_BUFFER_BYTES);
            self.buffer.shrink_to_fit();
        }
    }

    /// Discards `size` bytes of an oversized frame's body.
    async fn skip(&mut self, mut size: usize) -> Result<(), FrameError> {
        loop {
            let taken = size.min(self.buffered());
            self.start += taken;
            size -= taken;
            if size == 0 {
                return Ok(());
            }
            self.start = 0;
            self.end = 0;
            let read = self.reader.read(&mut self.buffer).await?;
            if read == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.end = read;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    /// The frames read from `stream` written in pieces of `piece` bytes.
    async fn read_all(stream: Vec<u8>, piece: usize) -> (Vec<Vec<u8>>, FrameError) {
        let (mut tx, rx) = tokio::io::duplex(piece);
        let writer = tokio::spawn(async move {
            for part in stream.chunks(piece) {
                tx.write_all(part).await.unwrap();
            }
        });
        let mut frames = FrameBuffer::new(rx);
        let mut bodies = Vec::new();
        let end = loop {
            match frames.next_frame().await {
                Ok(body) => bodies.push(body.to_vec()),
                Err(error) if error.is_recoverable() => bodies.push(b"<skipped>".to_vec()),
                Err(error) => break error,
            }
        };
        writer.await.unwrap();
        (bodies, end)
    }

    #[tokio::test]
    async fn frames_come_out_whole_and_in_order_however_the_bytes_arrive() {
        let big = vec![b'y'; 3 * FRAME_READ_BUFFER_BYTES + 17];
        let bodies: Vec<Vec<u8>> = vec![b"a".to_vec(), Vec::new(), big, b"after".to_vec()];
        let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        for piece in [1, 3, 4096, 70_000, stream.len()] {
            let (read, end) = read_all(stream.clone(), piece).await;
            assert_eq!(read, bodies, "pieces of {piece}");
            assert!(matches!(end, FrameError::Closed), "{end:?}");
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_is_skipped_and_the_stream_stays_in_step() {
        let size = MAX_FRAME_BYTES + 1;
        let mut stream = (size as u32).to_be_bytes().to_vec();
        stream.resize(FRAME_HEADER_BYTES + size, b'z');
        stream.extend(frame(b"next"));
        let (read, end) = read_all(stream, 1 << 20).await;
        assert_eq!(read, [b"<skipped>".to_vec(), b"next".to_vec()]);
        assert!(matches!(end, FrameError::Closed));
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_body_is_an_unexpected_end_inside_a_header_closed() {
        let mut stream = frame(b"whole");
        stream.extend_from_slice(&frame(b"cut short")[..FRAME_HEADER_BYTES + 3]);
        let (read, end) = read_all(stream, 5).await;
        assert_eq!(read, [b"whole".to_vec()]);
        assert!(
            matches!(&end, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{end:?}"
        );
        let mut stream = frame(b"whole");
        stream.extend_from_slice(&[0, 0]);
        let (read, end) = read_all(stream, 5).await;
        assert_eq!(read, [b"whole".to_vec()]);
        assert!(matches!(end, FrameError::Closed), "{end:?}");
    }
}

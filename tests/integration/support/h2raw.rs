//! A raw HTTP/2 client that writes frames as they are given: what a well-behaved client
//! library will not do (floods, resets, zero windows, endless CONTINUATION) is the point.
//! Header blocks use HPACK literals only; frames are read back whole.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// SETTINGS_INITIAL_WINDOW_SIZE.
pub const INITIAL_WINDOW_SIZE: u16 = 0x4;

/// One frame read back.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub struct RawH2 {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// The reading side of a connection whose writing side is busy elsewhere.
pub struct RawH2Reader {
    read: tokio::net::tcp::OwnedReadHalf,
    buf: Vec<u8>,
}

impl RawH2 {
    /// Reads frames from `read` (the other half writes).
    pub fn from_read_half(read: tokio::net::tcp::OwnedReadHalf) -> RawH2Reader {
        RawH2Reader {
            read,
            buf: Vec::new(),
        }
    }

    /// Connects (cleartext, prior knowledge) and sends the preface and `settings`.
    pub async fn connect(addr: std::net::SocketAddr, settings: &[(u16, u32)]) -> RawH2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut h2 = RawH2 {
            stream,
            buf: Vec::new(),
        };
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        h2.send(SETTINGS, 0, 0, &payload).await.unwrap();
        h2
    }

    /// Reads up to the server's SETTINGS and acknowledges them, as a client does before
    /// relying on them (until then the server's limits are not in force).
    pub async fn ack_settings(&mut self) {
        while let Some(f) = self.next(Duration::from_secs(5)).await {
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                self.send(SETTINGS, ACK, 0, &[]).await.unwrap();
                return;
            }
        }
        panic!("no SETTINGS from the server");
    }

    /// Writes one frame; an error means the server has closed.
    pub async fn send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        self.stream
            .write_all(&frame(kind, flags, stream, payload))
            .await
    }

    /// A GET for `path` on `host` on stream `id`, ending the stream.
    pub async fn get(&mut self, id: u32, host: &str, path: &str) -> std::io::Result<()> {
        self.send(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block(host, path),
        )
        .await
    }

    /// The next frame, `None` once the server has closed (or after `deadline`).
    pub async fn next(&mut self, deadline: Duration) -> Option<Frame> {
        next_frame(&mut self.stream, &mut self.buf, deadline).await
    }

    /// Every frame until the server closes the connection; `None` if it is still open
    /// after `deadline`.
    pub async fn until_closed(&mut self, deadline: Duration) -> Option<Vec<Frame>> {
        frames_until_closed(&mut self.stream, &mut self.buf, deadline).await
    }
}

impl RawH2Reader {
    /// Every frame until the server closes the connection; `None` if it is still open
    /// after `deadline`.
    pub async fn until_closed(&mut self, deadline: Duration) -> Option<Vec<Frame>> {
        frames_until_closed(&mut self.read, &mut self.buf, deadline).await
    }
}

async fn next_frame<R: AsyncReadExt + Unpin>(
    read: &mut R,
    buf: &mut Vec<u8>,
    deadline: Duration,
) -> Option<Frame> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() >= 9 + len {
                let f = Frame {
                    kind: buf[3],
                    flags: buf[4],
                    stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                    payload: buf[9..9 + len].to_vec(),
                };
                buf.drain(..9 + len);
                return Some(f);
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(end, read.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

async fn frames_until_closed<R: AsyncReadExt + Unpin>(
    read: &mut R,
    buf: &mut Vec<u8>,
    deadline: Duration,
) -> Option<Vec<Frame>> {
    let end = tokio::time::Instant::now() + deadline;
    let mut frames = Vec::new();
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        match next_frame(read, buf, left).await {
            Some(f) => frames.push(f),
            None if tokio::time::Instant::now() >= end => return None,
            None => return Some(frames),
        }
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK literal header field without indexing (new name), lengths under 127.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// The header block of a GET: `:method GET` and `:scheme http` from the static table.
pub fn request_block(host: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    block.extend(literal(":path", path));
    block.extend(literal(":authority", host));
    block
}

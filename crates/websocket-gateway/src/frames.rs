//! WebSocket frames (RFC 6455) as the gateway writes and reads them.
//!
//! Outbound: a server's frames are not masked, so an event's frame is the
//! same bytes for every client; [`put_frame`] appends header and payload to
//! a write buffer. Inbound: [`Reader`] decodes what a client sent (actix-http's
//! codec checks framing, masking and opcodes) and joins fragments into whole
//! messages up to the size limit, validating text as UTF-8. The codec
//! compares a frame's length with the limit only once the whole frame is
//! buffered, so the reader checks the length announced by the 2–14 header
//! bytes first: a client announcing a huge frame is refused before its
//! payload is held.
//!
//! The reader holds no buffer between messages, so an idle connection costs
//! no buffer memory.

use actix_codec::Decoder;
use actix_http::ws::{CloseReason, Codec, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use pulse_protocol::browser::close;

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Appends a final, unmasked frame of `opcode` carrying `payload`.
pub(crate) fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame: the code, then as much of `reason` as fits.
pub(crate) fn put_close(out: &mut Vec<u8>, reason: &CloseReason) {
    let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
    payload.extend_from_slice(&u16::from(reason.code).to_be_bytes());
    if let Some(description) = &reason.description {
        let mut end = description.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !description.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&description.as_bytes()[..end]);
    }
    put_frame(out, OP_CLOSE, &payload);
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4: the
/// registered codes, and 3000–4999 for applications).
pub(crate) fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A whole message from a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(ByteString),
    /// Binary messages are refused; their content does not matter.
    Binary,
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Why a client's frames cannot be read: each closes the connection with
/// its [`close_code`](Self::close_code).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("websocket protocol error: {0}")]
    Protocol(String),
}

impl FrameError {
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            Self::TooBig(_) => pulse_protocol::browser::close::MESSAGE_TOO_BIG,
            Self::InvalidUtf8 => close::INVALID_DATA,
            Self::Protocol(_) => close::PROTOCOL_ERROR,
        }
    }
}

/// A fragmented message being joined.
struct Partial {
    text: bool,
    data: BytesMut,
}

/// Decodes a client's bytes into whole messages. See the [module docs](self).
pub(crate) struct Reader {
    codec: Codec,
    buf: BytesMut,
    partial: Option<Box<Partial>>,
    max_size: usize,
    /// `Some` to keep the payload of a binary message for
    /// [`take_binary`](Self::take_binary) (the echo endpoint); the session
    /// refuses binary and drops it. Boxed: a session keeps its reader for
    /// life, and this is 8 bytes where the payload's handle is 32.
    binary: Option<Box<Option<Bytes>>>,
}

impl Reader {
    /// Messages (and frames) larger than `max_size` bytes are refused.
    pub(crate) fn new(max_size: usize) -> Self {
        Self { codec: Codec::new().max_size(max_size), buf: BytesMut::new(), partial: None, max_size, binary: None }
    }

    /// Keeps the payload of each binary message until [`take_binary`](Self::take_binary).
    pub(crate) fn keep_binary(mut self, keep: bool) -> Self {
        self.binary = keep.then(Box::default);
        self
    }

    /// The payload of the binary message [`next_message`](Self::next_message)
    /// last returned, when kept.
    pub(crate) fn take_binary(&mut self) -> Option<Bytes> {
        self.binary.as_mut().and_then(|kept| kept.take())
    }

    /// Adds bytes read from the socket.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if the bytes so far hold one.
    pub(crate) fn next_message(&mut self) -> Result<Option<Incoming>, FrameError> {
        loop {
            self.check_announced_length()?;
            let frame = match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if self.buf.is_empty() {
                        // Let go of the allocation between messages.
                        self.buf = BytesMut::new();
                    }
                    return Ok(None);
                }
                Err(ProtocolError::Overflow) => return Err(FrameError::TooBig(self.max_size)),
                Err(err) => return Err(FrameError::Protocol(err.to_string())),
            };
            let message = match frame {
                Frame::Text(bytes) => text(bytes)?,
                Frame::Binary(bytes) => self.binary_message(bytes),
                Frame::Ping(bytes) => Incoming::Ping(bytes),
                Frame::Pong(_) => Incoming::Pong,
                Frame::Close(reason) => Incoming::Close(reason),
                Frame::Continuation(Item::FirstText(bytes)) => {
                    self.start(true, &bytes)?;
                    continue;
                }
                Frame::Continuation(Item::FirstBinary(bytes)) => {
                    self.start(false, &bytes)?;
                    continue;
                }
                Frame::Continuation(Item::Continue(bytes)) => {
                    self.append(&bytes)?;
                    continue;
                }
                Frame::Continuation(Item::Last(bytes)) => {
                    self.append(&bytes)?;
                    match self.partial.take() {
                        Some(partial) if partial.text => text(partial.data.freeze())?,
                        Some(partial) => self.binary_message(partial.data.freeze()),
                        // The codec refuses a last fragment without a first.
                        None => return Err(FrameError::Protocol("continuation without a start".into())),
                    }
                }
            };
            return Ok(Some(message));
        }
    }

    /// Refuses the next frame from its header alone when the length it
    /// announces exceeds the limit, or, for a continuation, what is left of
    /// the limit after the fragments so far.
    ///
    /// A header the codec refuses from its first two bytes (reserved bits
    /// set, unmasked, unknown opcode) is left to the codec, so that such a
    /// frame closes with 1002 however its bytes are split across reads.
    fn check_announced_length(&self) -> Result<(), FrameError> {
        let Some(announced) = announced_length(&self.buf) else { return Ok(()) };
        let (first, second) = (self.buf[0], self.buf[1]);
        let opcode = first & 0x0f;
        if first & 0x70 != 0 || second & 0x80 == 0 || !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
            return Ok(());
        }
        let joined = match &self.partial {
            Some(partial) if opcode == 0 => partial.data.len(),
            _ => 0,
        };
        let room = self.max_size.saturating_sub(joined);
        if announced > room as u64 {
            return Err(FrameError::TooBig(self.max_size));
        }
        Ok(())
    }

    fn binary_message(&mut self, bytes: Bytes) -> Incoming {
        if let Some(kept) = &mut self.binary {
            **kept = Some(bytes);
        }
        Incoming::Binary
    }

    fn start(&mut self, text: bool, bytes: &[u8]) -> Result<(), FrameError> {
        self.partial = Some(Box::new(Partial { text, data: BytesMut::new() }));
        self.append(bytes)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(FrameError::Protocol("continuation without a start".into()));
        };
        if partial.data.len() + bytes.len() > self.max_size {
            self.partial = None;
            return Err(FrameError::TooBig(self.max_size));
        }
        partial.data.extend_from_slice(bytes);
        Ok(())
    }
}

/// The payload length a frame header at the start of `buf` announces, once
/// enough of the header is there (RFC 6455 §5.2).
fn announced_length(buf: &[u8]) -> Option<u64> {
    let second = *buf.get(1)?;
    match second & 0x7f {
        126 => buf.get(2..4).map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buf.get(2..10).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8]))),
        n => Some(u64::from(n)),
    }
}

fn text(bytes: Bytes) -> Result<Incoming, FrameError> {
    ByteString::try_from(bytes).map(Incoming::Text).map_err(|_| FrameError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use actix_http::ws::CloseCode;

    use super::*;

    /// A masked client frame, as a browser sends it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn server_frames_use_the_shortest_length_encoding() {
        let mut out = Vec::new();
        put_frame(&mut out, OP_TEXT, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        put_frame(&mut out, OP_TEXT, &[b'x'; 300]);
        assert_eq!(&out[..4], &[0x81, 126, 1, 44]);
        assert_eq!(out.len(), 4 + 300);
        out.clear();
        put_frame(&mut out, OP_TEXT, &vec![b'x'; 70_000]);
        assert_eq!(&out[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn close_frames_cut_long_reasons_at_a_character_boundary() {
        let mut out = Vec::new();
        let reason = CloseReason { code: CloseCode::from(4000), description: Some("é".repeat(100)) };
        put_close(&mut out, &reason);
        assert_eq!(out[0], 0x88);
        let len = out[1] as usize;
        assert!(len <= MAX_CONTROL_PAYLOAD);
        assert_eq!(&out[2..4], &4000u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn messages_split_across_reads_and_fragments_are_joined() {
        let mut reader = Reader::new(1024);
        let mut bytes = client_frame(false, OP_TEXT, b"{\"type\":");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, 0x0, b"\"ping\"}"));
        let (first, rest) = bytes.split_at(5);
        reader.extend(first);
        assert_eq!(reader.next_message().unwrap(), None);
        reader.extend(rest);
        assert_eq!(reader.next_message().unwrap(), Some(Incoming::Ping(Bytes::from_static(b"p"))));
        assert_eq!(reader.next_message().unwrap(), Some(Incoming::Text("{\"type\":\"ping\"}".into())));
        assert_eq!(reader.next_message().unwrap(), None);
    }

    #[test]
    fn announced_lengths_beyond_the_limit_are_refused_from_the_header() {
        // 2^40 bytes announced, no payload sent: refused at once.
        let mut reader = Reader::new(16 * 1024);
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        reader.extend(&header[..6]);
        assert_eq!(reader.next_message().unwrap(), None, "header incomplete");
        reader.extend(&header[6..]);
        assert!(matches!(reader.next_message(), Err(FrameError::TooBig(16384))));

        // A continuation whose announced length would take the message
        // past the limit is refused before its payload arrives.
        let mut reader = Reader::new(16);
        reader.extend(&client_frame(false, OP_TEXT, &[b'x'; 10]));
        let continuation = client_frame(true, 0x0, &[b'x'; 7]);
        reader.extend(&continuation[..2]);
        assert!(matches!(reader.next_message(), Err(FrameError::TooBig(16))));

        // Exactly the limit passes.
        let mut reader = Reader::new(16);
        reader.extend(&client_frame(false, OP_TEXT, &[b'x'; 10]));
        reader.extend(&client_frame(true, 0x0, &[b'x'; 6]));
        assert_eq!(reader.next_message().unwrap(), Some(Incoming::Text("x".repeat(16).into())));
    }

    /// Found by the `frames` fuzz target: a frame with reserved bits set
    /// announcing a huge length closed with 1009 when its header arrived
    /// whole and with 1002 when it arrived in pieces.
    #[test]
    fn a_bad_header_closes_with_1002_however_it_is_split() {
        let mut bytes = client_frame(true, OP_TEXT, b"hi");
        let bad_headers: [&[u8]; 3] = [
            // RSV bits, opcode 0xf, masked, 64-bit length.
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x14, 0x74, 0x42],
            // Unmasked, 2^40 bytes.
            &[0x81, 127, 0, 0, 1, 0, 0, 0, 0, 0],
            // Reserved opcode 0x3, masked, 2^40 bytes.
            &[0x83, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0],
        ];
        for header in bad_headers {
            bytes.truncate(8);
            bytes.extend_from_slice(header);
            for piece in [1, 2, 3, bytes.len()] {
                let mut reader = Reader::new(72);
                let mut outcome = Vec::new();
                'read: for chunk in bytes.chunks(piece) {
                    reader.extend(chunk);
                    loop {
                        match reader.next_message() {
                            Ok(Some(message)) => outcome.push(Ok(message)),
                            Ok(None) => break,
                            Err(err) => {
                                outcome.push(Err(err.close_code()));
                                break 'read;
                            }
                        }
                    }
                }
                assert_eq!(outcome, [Ok(Incoming::Text("hi".into())), Err(1002)], "{header:x?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn oversized_messages_invalid_text_and_unmasked_frames_are_refused() {
        let mut reader = Reader::new(16);
        reader.extend(&client_frame(true, OP_TEXT, &[b'x'; 17]));
        assert!(matches!(reader.next_message(), Err(FrameError::TooBig(16))));

        let mut reader = Reader::new(16);
        reader.extend(&client_frame(false, OP_TEXT, &[b'x'; 10]));
        reader.extend(&client_frame(true, 0x0, &[b'x'; 10]));
        let err = reader.next_message().unwrap_err();
        assert_eq!(err.close_code(), 1009);

        let mut reader = Reader::new(16);
        reader.extend(&client_frame(true, OP_TEXT, &[0xff, 0xfe]));
        assert_eq!(reader.next_message().unwrap_err().close_code(), 1007);

        let mut reader = Reader::new(16);
        let mut unmasked = Vec::new();
        put_frame(&mut unmasked, OP_TEXT, b"hi");
        reader.extend(&unmasked);
        assert_eq!(reader.next_message().unwrap_err().close_code(), 1002);
    }
}

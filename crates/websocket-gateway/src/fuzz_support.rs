//! Entry points for the fuzz targets in `fuzz/`: the frame reader the
//! WebSocket session uses, behind a function. Not part of the crate's API.

use crate::frames::{Incoming, Reader};

/// What reading a client's bytes gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Each whole message, described (`Text(…)`, `Binary(n)`, `Ping(…)`,
    /// `Pong`, `Close(…)`).
    pub messages: Vec<String>,
    /// The close code of the error that ended the reading, if one did.
    pub error: Option<u16>,
}

/// Feeds `chunks` (as successive socket reads) to a reader with a message
/// limit of `max_size` bytes, taking every whole message after each chunk,
/// as the session does.
///
/// # Panics
///
/// When the reader breaks its contract: a message longer than `max_size`,
/// a control payload longer than 125 bytes. (Those are what a fuzzer looks
/// for.)
pub fn read_frames<'a>(max_size: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Read {
    let mut reader = Reader::new(max_size).keep_binary(true);
    let mut read = Read { messages: Vec::new(), error: None };
    for chunk in chunks {
        reader.extend(chunk);
        loop {
            match reader.next_message() {
                Ok(Some(message)) => read.messages.push(describe(message, &mut reader, max_size)),
                Ok(None) => break,
                Err(err) => {
                    read.error = Some(err.close_code());
                    return read;
                }
            }
        }
    }
    read
}

fn describe(message: Incoming, reader: &mut Reader, max_size: usize) -> String {
    match message {
        Incoming::Text(text) => {
            assert!(text.len() <= max_size, "text message of {} bytes past the limit {max_size}", text.len());
            format!("Text({text:?})")
        }
        Incoming::Binary => {
            let data = reader.take_binary().unwrap_or_default();
            assert!(data.len() <= max_size, "binary message of {} bytes past the limit {max_size}", data.len());
            format!("Binary({data:?})")
        }
        Incoming::Ping(payload) => {
            assert!(payload.len() <= 125, "ping payload of {} bytes", payload.len());
            format!("Ping({payload:?})")
        }
        Incoming::Pong => "Pong".to_owned(),
        Incoming::Close(reason) => format!("Close({reason:?})"),
    }
}

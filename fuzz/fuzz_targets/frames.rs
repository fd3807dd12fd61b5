//! The gateway's WebSocket frame reader on arbitrary client bytes: it never
//! panics, never returns a message past the limit, and reads the same
//! messages whether the bytes arrive at once or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_websocket_gateway::fuzz_support::read_frames;

fuzz_target!(|input: &[u8]| {
    let Some((&control, bytes)) = input.split_first() else { return };
    // A small limit, so that fragments and oversize frames are reached.
    let max_size = 16 + usize::from(control & 0x3f) * 8;
    let piece = usize::from(control >> 6) * 3 + 1;
    let whole = read_frames(max_size, [bytes]);
    let pieces = read_frames(max_size, bytes.chunks(piece));
    assert_eq!(whole, pieces, "reading in pieces of {piece} bytes changed the outcome");
});

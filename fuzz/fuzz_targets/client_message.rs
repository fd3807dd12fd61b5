//! The browser protocol's parser on arbitrary text: it never panics, and a
//! message it accepts survives a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_protocol::ClientMessage;

fuzz_target!(|text: &str| {
    if let Ok(message) = ClientMessage::parse(text) {
        let json = message.to_json();
        let again = ClientMessage::parse(&json).expect("a serialised message parses");
        assert_eq!(message, again, "round trip through {json}");
    }
});

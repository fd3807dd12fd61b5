//! The event envelope on arbitrary bytes: deserialising never panics, and
//! an accepted event serialises and reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_protocol::Event;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(event) = serde_json::from_slice::<Event>(bytes) {
        let json = serde_json::to_string(&event).expect("an event serialises");
        let again: Event = serde_json::from_str(&json).expect("a serialised event reads back");
        assert_eq!(event, again, "round trip through {json}");
    }
});

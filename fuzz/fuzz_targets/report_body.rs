//! The ingest report body, as `POST /api/v1/reports` reads it: never a
//! panic, and an accepted report survives a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_ingest::fuzz_support::report_body;

fuzz_target!(|bytes: &[u8]| {
    if let Some(Ok(report)) = report_body(bytes, 256) {
        let json = serde_json::to_vec(&report).expect("a report serialises");
        let again = report_body(&json, 256).expect("JSON").expect("an accepted report is accepted again");
        assert_eq!(report, again);
    }
});

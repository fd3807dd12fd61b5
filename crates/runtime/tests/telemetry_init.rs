//! `init_telemetry` installs process-global state, so it is tested in its own
//! test binary (one process), in one test.

// Test code: clippy's test allowance does not reach helper functions here.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_runtime::{LogFormat, TelemetryError, TelemetrySettings};

/// A stand-in OTLP collector: accepts connections, sends an empty HTTP/2
/// SETTINGS frame so the client proceeds, and records every byte received.
/// gRPC bodies are uncompressed protobuf, in which span names appear as is.
fn fake_collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                // SETTINGS (type 4), no payload, stream 0.
                let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (endpoint, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs on actix's current-thread runtime, like the services: dropping the
/// guard there must flush the spans without stalling.
#[actix_web::test]
async fn init_exports_spans_over_otlp_and_refuses_a_second_init() {
    let (endpoint, received) = fake_collector();
    let settings = TelemetrySettings {
        log_format: LogFormat::Json,
        log_level: "info".to_owned(),
        otlp_endpoint: Some(endpoint),
        otlp_protocol: None,
        service_name: Some("pulse-runtime-test".to_owned()),
    };
    let guard = pulse_runtime::init_telemetry("pulse-runtime-test", &settings).unwrap();
    assert!(guard.exporting());

    let traceparent = {
        let span = tracing::info_span!("pulse_runtime_exported_span");
        let _entered = span.enter();
        tracing::info!("inside the exported span");
        pulse_runtime::current_traceparent()
    };
    let traceparent = traceparent.expect("the OTel layer gives the span a valid context");
    assert!(traceparent.starts_with("00-"), "{traceparent}");

    // A second init fails cleanly instead of panicking.
    let second = pulse_runtime::init_telemetry("again", &TelemetrySettings::default());
    assert!(matches!(second, Err(TelemetryError::AlreadyInitialized(_))), "{second:?}");

    // Dropping the guard flushes the batch to the collector.
    let started = Instant::now();
    drop(guard);
    assert!(started.elapsed() < Duration::from_secs(8), "shutdown took {:?}", started.elapsed());

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bytes = received.lock().unwrap().clone();
        if contains(&bytes, b"pulse_runtime_exported_span") {
            assert!(contains(&bytes, b"pulse-runtime-test"), "service.name is exported");
            break;
        }
        assert!(Instant::now() < deadline, "the span never reached the collector ({} bytes)", bytes.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#![allow(clippy::unwrap_used)]
//! Micro-benchmarks of the per-event hot paths: encoding the envelope once,
//! parsing frames (server side: client messages; client side: events), the
//! benchmark client's own stamp scan, Pulse's hub fanning events out to
//! 10,000 subscribers (queues taken and frames encoded as the sessions do,
//! without sockets), and the reference broadcaster's loop for comparison.
//!
//! `cargo bench -p pulse-bench --bench hot_paths`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pulse_bench::accounting::{payload, scan_stamp};
use pulse_protocol::{Channel, ClientMessage, EventDraft, EventType, Offset, ServerFrame};
use pulse_websocket_gateway::bench_support::FanOut;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

fn event_json() -> String {
    let draft = EventDraft::new(EventType::parse("bench").unwrap(), payload(12_345, 1_763_800_000_000_000, 0));
    let event = draft.into_event(Channel::parse("bench").unwrap(), Offset::new(1_763_800_000_000, 0).into());
    serde_json::to_string(&event).unwrap()
}

fn encode_and_parse(c: &mut Criterion) {
    let text = event_json();
    let event = match ServerFrame::parse(&text).unwrap() {
        ServerFrame::Event(e) => e,
        ServerFrame::Control(_) => unreachable!(),
    };
    c.bench_function(&format!("envelope encode ({} B)", text.len()), |b| {
        b.iter(|| serde_json::to_string(black_box(&event)).unwrap());
    });
    c.bench_function("server frame parse (event)", |b| b.iter(|| ServerFrame::parse(black_box(&text)).unwrap()));
    c.bench_function("bench stamp scan (event)", |b| b.iter(|| scan_stamp(black_box(&text)).unwrap()));
    let subscribe = ClientMessage::Subscribe { channel: Channel::parse("agent:web-1").unwrap(), since: None }.to_json();
    c.bench_function("client message parse (subscribe)", |b| {
        b.iter(|| ClientMessage::parse(black_box(&subscribe)).unwrap());
    });
}

fn fan_out(c: &mut Criterion) {
    const CLIENTS: usize = 10_000;
    let template = match ServerFrame::parse(&event_json()).unwrap() {
        ServerFrame::Event(e) => e,
        ServerFrame::Control(_) => unreachable!(),
    };
    let mut hub = FanOut::new(CLIENTS);
    let frame = Message::Text(Utf8Bytes::from(event_json()));
    let mut queues: Vec<_> = (0..CLIENTS).map(|_| mpsc::channel::<Message>(1024)).collect();
    let mut group = c.benchmark_group("fan-out");
    group.throughput(Throughput::Elements(CLIENTS as u64));
    group.bench_function("pulse hub: 1 event to 10k subscribers", |b| {
        b.iter(|| assert_eq!(hub.round(black_box(&template), 1), CLIENTS));
    });
    group.throughput(Throughput::Elements(10 * CLIENTS as u64));
    group.bench_function("pulse hub: batch of 10 events to 10k subscribers", |b| {
        b.iter(|| assert_eq!(hub.round(black_box(&template), 10), 10 * CLIENTS));
    });
    group.throughput(Throughput::Elements(CLIENTS as u64));
    group.bench_function("reference: 1 frame to 10k bounded queues", |b| {
        b.iter(|| {
            for (tx, _) in &queues {
                let _ = tx.try_send(frame.clone());
            }
            for (_, rx) in &mut queues {
                while rx.try_recv().is_ok() {}
            }
        });
    });
    group.finish();
}

criterion_group!(benches, encode_and_parse, fan_out);
criterion_main!(benches);

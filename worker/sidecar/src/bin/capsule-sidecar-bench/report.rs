//! The bench's output: a Markdown table on stdout and the same figures as JSON.

use crate::figures::{IngestFigures, MemoryFigures, RoundTripFigures, WarmMemory};
use crate::Args;

/// Target for the worker and the sidecar process each (issue #21).
pub const WARM_PROCESS_TARGET_BYTES: u64 = 10 * 1024 * 1024;

pub fn print_warm_memory(warm: &WarmMemory) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let verdict = |b: u64| {
        if b <= WARM_PROCESS_TARGET_BYTES {
            "met"
        } else {
            "missed"
        }
    };
    println!(
        "| warm worker RSS: capsule-worker (target ≤ 10 MiB) | {:.1} MiB ({}) |",
        mib(warm.worker),
        verdict(warm.worker)
    );
    println!(
        "| warm worker RSS: capsule-sidecar (target ≤ 10 MiB) | {:.1} MiB ({}) |",
        mib(warm.sidecar),
        verdict(warm.sidecar)
    );
    println!(
        "| warm worker RSS: fork server + interpreter + standby / bare python3 | {:.1} / {:.1} MiB |",
        mib(warm.interpreters),
        mib(warm.bare_python)
    );
}

pub fn print_table(
    args: &Args,
    ingest: &IngestFigures,
    memory: &MemoryFigures,
    trips: &RoundTripFigures,
) {
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| events ingested per second ({} events) | {:.0} |",
        args.events, ingest.events_per_second
    );
    println!(
        "| sidecar RSS after ingest (bounded buffer) | {} B |",
        ingest.rss
    );
    println!(
        "| resident bytes per buffered event ({:.0} events) | {:.0} |",
        memory.buffered, memory.rss_per_event
    );
    println!(
        "| accounted bytes per buffered event | {:.0} |",
        memory.accounted_per_event
    );
    println!("| execute p50 tracing off | {:.3} ms |", trips.off_p50);
    println!("| execute p50 tracing on | {:.3} ms |", trips.on_p50);
    println!(
        "| execute p99 off / on | {:.3} / {:.3} ms |",
        trips.off_p99, trips.on_p99
    );
    println!("| p50 overhead (target ≤ 3 %) | {:.2} % |", trips.overhead);
    println!(
        "| trace events received during round trips | {:.0} |",
        trips.received
    );
    println!(
        "| worker CPU per execution, tracing off / on | {:.1} / {:.1} µs |",
        trips.cpu_plain, trips.cpu_traced
    );
    println!(
        "| sidecar CPU per traced execution | {:.1} µs |",
        trips.cpu_sidecar
    );
}

pub fn write_json(
    args: &Args,
    ingest: &IngestFigures,
    memory: &MemoryFigures,
    trips: &RoundTripFigures,
    warm: &WarmMemory,
) {
    let json = serde_json::json!({
        "warmWorkerRssBytes": {
            "worker": warm.worker,
            "sidecar": warm.sidecar,
            "interpreters": warm.interpreters,
            "barePythonReference": warm.bare_python,
            "targetPerProcess": WARM_PROCESS_TARGET_BYTES,
        },
        "eventsPerSecond": ingest.events_per_second,
        "ingestEvents": args.events,
        "ingestRssBytes": ingest.rss,
        "residentBytesPerBufferedEvent": memory.rss_per_event,
        "accountedBytesPerBufferedEvent": memory.accounted_per_event,
        "bufferedEvents": memory.buffered,
        "roundTrips": args.round_trips,
        "executeP50MsTracingOff": trips.off_p50,
        "executeP50MsTracingOn": trips.on_p50,
        "executeP99MsTracingOff": trips.off_p99,
        "executeP99MsTracingOn": trips.on_p99,
        "p50OverheadPercent": trips.overhead,
        "traceEventsReceived": trips.received,
        "workerCpuMicrosPerExecutionTracingOff": trips.cpu_plain,
        "workerCpuMicrosPerExecutionTracingOn": trips.cpu_traced,
        "sidecarCpuMicrosPerTracedExecution": trips.cpu_sidecar,
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&json).unwrap()).expect("writing JSON");
    println!("wrote {}", args.json.display());
}

//! capsule-sidecar: the trace buffer, OTLP export and policy-gated introspection of one worker pod.

//! capsule-devcluster: a development stand-in for the Kubernetes API server (never a production path).

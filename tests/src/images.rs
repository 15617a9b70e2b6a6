//! The images of `scripts/images.sh`, built from this workspace's debug binaries for the tests
//! (`tests/tests/images.rs` builds them every run; others reuse them while the binaries are the
//! ones they were built from, see [`ensure_images`]).

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::{bin, workspace};

/// Images of the tests get their own names, so a `make images` of the same tree is left alone.
pub const PREFIX: &str = "localhost/capsule-e2e/";
/// What goes into the images.
pub const BINARIES: [&str; 4] = [
    "capsule-operator",
    "capsule-worker",
    "capsule-sidecar",
    "capsule-gateway",
];

pub fn script(name: &str) -> PathBuf {
    workspace().join("scripts").join(name)
}

/// Runs `command`, panicking with its output unless it succeeds.
pub fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `<PREFIX><name>:<workspace version>`.
pub fn image(name: &str) -> String {
    format!("{PREFIX}{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// buildah and mmdebstrap, through the project's tool script (needs root, as CI is).
pub fn install_tools() {
    run(
        Command::new(script("install-tools.sh")).args(["buildah", "mmdebstrap"]),
        "scripts/install-tools.sh buildah mmdebstrap (needs root, or install both with apt-get)",
    );
}

/// Builds the images with `scripts/images.sh --profile debug`; returns its report (each image
/// with its size) and records which binaries they hold.
pub fn build_images() -> String {
    for name in BINARIES {
        bin(name);
    }
    let output = run(
        Command::new(script("images.sh"))
            .args(["--profile", "debug"])
            .env("CONTAINER_ENGINE", "buildah")
            .env("IMAGE_PREFIX", PREFIX),
        "scripts/images.sh --profile debug",
    );
    std::fs::write(stamp_path(), binaries_stamp()).expect("image stamp written");
    String::from_utf8(output.stdout).unwrap()
}

/// Builds the images unless the ones in storage hold the current binaries.
pub fn ensure_images() {
    install_tools();
    let present = BINARIES.iter().all(|name| {
        Command::new(script("buildah.sh"))
            .args(["inspect", "--type", "image", &image(name)])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let current = std::fs::read_to_string(stamp_path()).is_ok_and(|s| s == binaries_stamp());
    if !(present && current) {
        eprintln!("{}", build_images());
    }
}

fn stamp_path() -> PathBuf {
    let tools = std::env::var("CAPSULE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join(".tools"));
    tools.join("images").join("e2e-images.stamp")
}

/// Size and modification time of each binary: a rebuild changes at least one.
fn binaries_stamp() -> String {
    BINARIES
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(bin(name)).expect("binary");
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            format!("{name} {} {}\n", meta.len(), modified.as_nanos())
        })
        .collect()
}

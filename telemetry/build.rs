//! Records the git revision the binary is built from (`capsule_build_info{revision}`), or
//! `unknown` outside a git checkout. `CAPSULE_REVISION` in the build environment wins (image
//! builds from a source tarball set it).
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CAPSULE_REVISION");
    let revision = std::env::var("CAPSULE_REVISION")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // A new commit moves HEAD or the branch it names; either rebuilds this crate alone.
    for path in ["HEAD", "refs/heads"] {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rustc-env=CAPSULE_REVISION={revision}");
}

//! Which local command stands in for a container image.
//!
//! A mapping is `PATTERN=COMMAND [ARGS...]`. The pattern matches the whole image reference or, failing
//! that, its last path segment (`ghcr.io/acme/capsule-worker:1.2` is tried as itself and as
//! `capsule-worker:1.2`); a trailing `*` matches any suffix and a lone `*` matches every image. The
//! first matching entry wins.
//!
//! The command's first word is the executable. The token `{args}` expands to the container's
//! `command` followed by its `args` (so `busybox*={args}` runs a container's `sh -c ...` as is, and
//! `capsule-worker:*=target/debug/capsule-worker {args}` passes the container's arguments to the
//! worker binary). Without `{args}` the container's `command` and `args` are ignored. A relative
//! executable path containing `/` is resolved against the kubelet's working directory at start.

use std::path::Path;

use crate::error::{Error, Result};

const ARGS_PLACEHOLDER: &str = "{args}";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMapping {
    pub pattern: String,
    pub command: Vec<String>,
}

/// Parses `PATTERN=COMMAND [ARGS...]` (whitespace-separated words, no quoting) into the pair that
/// `KubeletConfig::image_map` holds.
pub fn parse_image_mapping(text: &str) -> Result<(String, Vec<String>)> {
    let (pattern, command) = text
        .split_once('=')
        .ok_or_else(|| Error::InvalidImageMapping(text.to_owned()))?;
    let pattern = pattern.trim();
    let command: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    if pattern.is_empty() || command.is_empty() {
        return Err(Error::InvalidImageMapping(text.to_owned()));
    }
    Ok((pattern.to_owned(), command))
}

#[derive(Clone, Debug, Default)]
pub struct ImageMap {
    entries: Vec<ImageMapping>,
}

impl ImageMap {
    /// Builds the map, resolving relative executables (those containing `/`) against `base_dir`.
    pub fn new(entries: &[(String, Vec<String>)], base_dir: &Path) -> Self {
        let entries = entries
            .iter()
            .map(|(pattern, command)| {
                let mut command = command.clone();
                if let Some(program) = command.first_mut() {
                    if program.contains('/') && Path::new(program.as_str()).is_relative() {
                        *program = base_dir
                            .join(program.as_str())
                            .to_string_lossy()
                            .into_owned();
                    }
                }
                ImageMapping {
                    pattern: pattern.clone(),
                    command,
                }
            })
            .collect();
        ImageMap { entries }
    }

    pub fn lookup(&self, image: &str) -> Option<&ImageMapping> {
        let last_segment = image.rsplit('/').next().unwrap_or(image);
        self.entries.iter().find(|entry| {
            pattern_matches(&entry.pattern, image) || pattern_matches(&entry.pattern, last_segment)
        })
    }

    /// The argv (executable first) for a container with this image, `command` and `args`.
    pub fn argv(&self, image: &str, command: &[String], args: &[String]) -> Result<Vec<String>> {
        let mapping = self
            .lookup(image)
            .ok_or_else(|| Error::ImageNotMapped(image.to_owned()))?;
        let mut argv = Vec::new();
        for word in &mapping.command {
            if word == ARGS_PLACEHOLDER {
                argv.extend(command.iter().cloned());
                argv.extend(args.iter().cloned());
            } else {
                argv.push(word.clone());
            }
        }
        if argv.is_empty() {
            // `{args}` alone with a container that names no command: nothing to run.
            return Err(Error::ImageNotMapped(image.to_owned()));
        }
        Ok(argv)
    }
}

pub(crate) fn pattern_matches(pattern: &str, image: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix),
        None => pattern == image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[&str]) -> ImageMap {
        let parsed: Vec<_> = entries
            .iter()
            .map(|e| parse_image_mapping(e).unwrap())
            .collect();
        ImageMap::new(&parsed, Path::new("/repo"))
    }

    #[test]
    fn wildcard_and_last_segment_match() {
        let m = map(&[
            "capsule-worker:*=target/debug/capsule-worker {args}",
            "busybox={args}",
        ]);
        let argv = m
            .argv(
                "ghcr.io/x/capsule-worker:1.0",
                &[],
                &["--port".into(), "80".into()],
            )
            .unwrap();
        assert_eq!(argv, ["/repo/target/debug/capsule-worker", "--port", "80"]);
        let argv = m
            .argv("busybox", &["sh".into(), "-c".into()], &["echo hi".into()])
            .unwrap();
        assert_eq!(argv, ["sh", "-c", "echo hi"]);
        assert!(matches!(
            m.argv("busybox:1.36", &[], &[]),
            Err(Error::ImageNotMapped(_))
        ));
    }

    #[test]
    fn without_placeholder_container_args_are_ignored() {
        let m = map(&["*=/bin/true"]);
        assert_eq!(
            m.argv("anything", &["x".into()], &[]).unwrap(),
            ["/bin/true"]
        );
    }

    #[test]
    fn malformed_mapping_is_refused() {
        assert!(parse_image_mapping("no-equals-sign").is_err());
        assert!(parse_image_mapping("img=").is_err());
    }
}

//! Where a container's volume mounts really are.
//!
//! A process cannot see a mount at `/var/run/capsule`, so every volume is materialised under the pod
//! directory (`<pod dir>/volumes/<volume>`, plus `subPath`) and the container's env values, command,
//! args, working directory and exec probes have each mount path rewritten to that real path: an env
//! value `/var/run/capsule/trace.sock` becomes `<pod dir>/volumes/<volume>/trace.sock`. A mount path
//! is rewritten only where it stands as a whole path (at the start of the string or after a character
//! that cannot be part of a path, and followed by `/`, the end, or such a character).

use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct MountTable {
    /// Longest mount path first, so nested mounts win.
    entries: Vec<(String, PathBuf)>,
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '~' | '+' | '@')
}

impl MountTable {
    pub fn new(mut entries: Vec<(String, PathBuf)>) -> Self {
        for (mount_path, _) in &mut entries {
            while mount_path.len() > 1 && mount_path.ends_with('/') {
                mount_path.pop();
            }
        }
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.0.len()));
        MountTable { entries }
    }

    pub fn host_path(&self, mount_path: &str) -> Option<&PathBuf> {
        self.entries
            .iter()
            .find(|(path, _)| path == mount_path.trim_end_matches('/'))
            .map(|(_, host)| host)
    }

    pub fn rewrite(&self, text: &str) -> String {
        let mut output = String::with_capacity(text.len());
        let mut index = 0;
        'scan: while index < text.len() {
            let at_boundary = text[..index]
                .chars()
                .next_back()
                .is_none_or(|c| !is_path_char(c));
            if at_boundary && text[index..].starts_with('/') {
                for (mount_path, host) in &self.entries {
                    if let Some(after) = text[index..].strip_prefix(mount_path.as_str()) {
                        let ends_cleanly = after
                            .chars()
                            .next()
                            .is_none_or(|c| c == '/' || !is_path_char(c));
                        if ends_cleanly {
                            output.push_str(&host.to_string_lossy());
                            index += mount_path.len();
                            continue 'scan;
                        }
                    }
                }
            }
            let c = text[index..].chars().next().unwrap_or_default();
            output.push(c);
            index += c.len_utf8();
        }
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_whole_mount_paths_only() {
        let table = MountTable::new(vec![
            (
                "/var/run/capsule/".into(),
                PathBuf::from("/pods/p/volumes/sock"),
            ),
            (
                "/var/run/capsule/deep".into(),
                PathBuf::from("/pods/p/volumes/deep"),
            ),
            ("/etc/config".into(), PathBuf::from("/pods/p/volumes/cfg")),
        ]);
        assert_eq!(
            table.rewrite("/var/run/capsule/trace.sock"),
            "/pods/p/volumes/sock/trace.sock"
        );
        assert_eq!(
            table.rewrite("/var/run/capsule/deep/x"),
            "/pods/p/volumes/deep/x"
        );
        assert_eq!(
            table.rewrite("--config=/etc/config/a.yaml"),
            "--config=/pods/p/volumes/cfg/a.yaml"
        );
        assert_eq!(table.rewrite("/etc/configuration"), "/etc/configuration");
        assert_eq!(table.rewrite("/opt/etc/config"), "/opt/etc/config");
        assert_eq!(table.rewrite("/etc/config"), "/pods/p/volumes/cfg");
    }
}

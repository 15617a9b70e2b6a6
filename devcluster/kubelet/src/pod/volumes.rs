//! Pod volumes materialised as plain files under `<pod dir>/volumes/<volume>`: emptyDir, Secret,
//! ConfigMap, downwardAPI and projected (service-account token via TokenRequest, Secret, ConfigMap,
//! downwardAPI); hostPath is used in place; a persistentVolumeClaim is a directory per claim under
//! the kubelet's state dir, shared by every pod naming the claim (as a ReadWriteMany volume; the
//! devcluster serves no PersistentVolumeClaim objects, so the claim is not looked up). Files are written whole (temporary file, then rename).
//! Contents are not refreshed when the Secret or ConfigMap changes; service-account tokens are
//! re-requested at 80 % of their lifetime.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource,
    ServiceAccount, ServiceAccountTokenProjection, Volume, VolumeProjection,
};
use kube::api::PostParams;
use kube::Api;

use super::fields::field_value;
use super::objects::PodObjects;
use crate::error::{Error, Result};

/// The service-account volume the kubelet adds to a pod that automounts a token and has none (the
/// admission step a real API server would do), and where containers find it.
pub const IMPLICIT_TOKEN_VOLUME: &str = "kube-api-access-devcluster";
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const DEFAULT_FILE_MODE: i32 = 0o644;
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

pub struct VolumeContext<'a> {
    pub client: &'a kube::Client,
    pub pod: &'a Pod,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub api_server_ca_pem: Option<&'a str>,
    /// Where the pod's namespace keeps the directories of its persistentVolumeClaims.
    pub claims_dir: &'a Path,
}

/// A token file to re-request before it expires.
#[derive(Clone, Debug)]
pub struct TokenFile {
    pub path: PathBuf,
    pub projection: ServiceAccountTokenProjection,
    /// The projected volume's `defaultMode`.
    pub default_mode: Option<i32>,
}

#[derive(Debug, Default)]
pub struct Materialised {
    /// Volume name → where it is on this machine.
    pub paths: HashMap<String, PathBuf>,
    pub token_files: Vec<TokenFile>,
    /// Lifetime of the shortest token written, to schedule the refresh.
    pub shortest_token_lifetime: Option<Duration>,
    /// Things worth a Warning event that did not stop the pod.
    pub warnings: Vec<String>,
}

/// The implicit service-account token volume, as the ServiceAccount admission plugin adds it.
pub fn implicit_token_volume() -> Volume {
    Volume {
        name: IMPLICIT_TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(DEFAULT_FILE_MODE),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: ROOT_CA_CONFIG_MAP.into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(k8s_openapi::api::core::v1::DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: Some("v1".into()),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

pub async fn materialise(
    context: &VolumeContext<'_>,
    objects: &mut PodObjects,
    volumes: &[Volume],
    volumes_dir: &Path,
) -> Result<Materialised> {
    let mut done = Materialised::default();
    for volume in volumes {
        let dir = volumes_dir.join(&volume.name);
        if let Some(host_path) = &volume.host_path {
            done.paths
                .insert(volume.name.clone(), PathBuf::from(&host_path.path));
            continue;
        }
        let claim = volume.persistent_volume_claim.as_ref();
        let dir = match claim {
            Some(claim) => context.claims_dir.join(&claim.claim_name),
            None => dir,
        };
        create_dir(&dir).await?;
        done.paths.insert(volume.name.clone(), dir.clone());
        if volume.empty_dir.is_some() || claim.is_some() {
            // World-writable as a kubelet makes it, so a container with any runAsUser can use it.
            tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .await
                .map_err(|e| Error::io(&dir, e))?;
            continue;
        }
        fill_volume(context, objects, volume, &dir, &mut done).await?;
    }
    Ok(done)
}

/// Writes a volume's content into its directory: Secret or ConfigMap items, downward API
/// files, or projections; any other kind stays an empty directory, with a warning.
async fn fill_volume(
    context: &VolumeContext<'_>,
    objects: &mut PodObjects,
    volume: &Volume,
    dir: &Path,
    done: &mut Materialised,
) -> Result<()> {
    let fail = |message: String| Error::Volume {
        volume: volume.name.clone(),
        message,
    };
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let data = objects.secret(&name).await?.cloned();
        let keys = ObjectKeys {
            kind: "secret",
            name: &name,
            items: source.items.as_deref(),
            default_mode: source.default_mode,
            optional: source.optional.unwrap_or(false),
        };
        keys.write(dir, data).await.map_err(fail)?;
    } else if let Some(source) = &volume.config_map {
        let data = objects.config_map(&source.name).await?.cloned();
        let keys = ObjectKeys {
            kind: "configmap",
            name: &source.name,
            items: source.items.as_deref(),
            default_mode: source.default_mode,
            optional: source.optional.unwrap_or(false),
        };
        keys.write(dir, data).await.map_err(fail)?;
    } else if let Some(source) = &volume.downward_api {
        write_downward(context, dir, source.items.as_deref(), source.default_mode)
            .await
            .map_err(fail)?;
    } else if let Some(source) = &volume.projected {
        let best_effort = volume.name == IMPLICIT_TOKEN_VOLUME;
        for projection in source.sources.iter().flatten() {
            project(
                context,
                objects,
                dir,
                projection,
                source.default_mode,
                best_effort,
                done,
            )
            .await
            .map_err(fail)?;
        }
    } else {
        done.warnings.push(format!(
            "volume {} is of a kind the devcluster does not support; it is an empty directory",
            volume.name
        ));
    }
    Ok(())
}

async fn project(
    context: &VolumeContext<'_>,
    objects: &mut PodObjects,
    dir: &Path,
    projection: &VolumeProjection,
    default_mode: Option<i32>,
    best_effort: bool,
    done: &mut Materialised,
) -> std::result::Result<(), String> {
    if let Some(source) = &projection.secret {
        let data = objects
            .secret(&source.name)
            .await
            .map_err(|e| e.to_string())?
            .cloned();
        let keys = ObjectKeys {
            kind: "secret",
            name: &source.name,
            items: source.items.as_deref(),
            default_mode,
            optional: source.optional.unwrap_or(false),
        };
        keys.write(dir, data).await?;
    }
    if let Some(source) = &projection.config_map {
        let data = objects
            .config_map(&source.name)
            .await
            .map_err(|e| e.to_string())?
            .cloned();
        if data.is_none() && source.name == ROOT_CA_CONFIG_MAP {
            // No root CA ConfigMap in the devcluster: the CA the kubelet was given stands in.
            if let Some(pem) = context.api_server_ca_pem {
                write_file(&dir.join("ca.crt"), pem.as_bytes(), default_mode).await?;
            }
        } else {
            let keys = ObjectKeys {
                kind: "configmap",
                name: &source.name,
                items: source.items.as_deref(),
                default_mode,
                optional: source.optional.unwrap_or(false),
            };
            keys.write(dir, data).await?;
        }
    }
    if let Some(source) = &projection.downward_api {
        write_downward(context, dir, source.items.as_deref(), default_mode).await?;
    }
    if let Some(source) = &projection.service_account_token {
        let path = dir.join(&source.path);
        match write_token(context, &path, source, default_mode).await {
            Ok(lifetime) => {
                done.token_files.push(TokenFile {
                    path,
                    projection: source.clone(),
                    default_mode,
                });
                done.shortest_token_lifetime = Some(
                    done.shortest_token_lifetime
                        .map_or(lifetime, |l| l.min(lifetime)),
                );
            }
            Err(error) if best_effort => done.warnings.push(format!(
                "no service-account token for the pod (it runs without one): {error}"
            )),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Requests a token bound to the pod and writes it; returns its lifetime.
pub async fn write_token(
    context: &VolumeContext<'_>,
    path: &Path,
    projection: &ServiceAccountTokenProjection,
    default_mode: Option<i32>,
) -> std::result::Result<Duration, String> {
    let namespace = context.pod.metadata.namespace.clone().unwrap_or_default();
    let account = context
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let seconds = projection
        .expiration_seconds
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection.audience.iter().cloned().collect(),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: context.pod.metadata.name.clone(),
                uid: context.pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(context.client.clone(), &namespace);
    let granted = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for service account {namespace}/{account}: {e}"))?;
    let token = granted.status.map(|s| s.token).unwrap_or_default();
    if token.is_empty() {
        return Err(format!(
            "token for service account {namespace}/{account}: empty reply"
        ));
    }
    let (owner, group, mode) = token_ownership(context.pod, default_mode);
    write_file(path, token.as_bytes(), Some(mode)).await?;
    std::os::unix::fs::chown(path, owner, group)
        .map_err(|e| format!("owning {}: {e}", path.display()))?;
    Ok(Duration::from_secs(seconds.max(60) as u64))
}

/// Who may read a projected token, as a kubelet decides: the one `runAsUser` every container
/// shares (mode 0600), else the pod's `fsGroup` (0640), else the volume's `defaultMode` (0644 by
/// default), owned by root, which a container running as its image's user can read.
fn token_ownership(pod: &Pod, default_mode: Option<i32>) -> (Option<u32>, Option<u32>, i32) {
    let spec = pod.spec.as_ref();
    let pod_user = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.run_as_user);
    let mut users = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| {
            c.security_context
                .as_ref()
                .and_then(|c| c.run_as_user)
                .or(pod_user)
        });
    let first = users.next().flatten();
    if let Some(uid) = first.filter(|uid| users.all(|u| u == Some(*uid))) {
        return (Some(uid as u32), None, 0o600);
    }
    match spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
    {
        Some(group) => (None, Some(group as u32), 0o640),
        None => (None, None, default_mode.unwrap_or(0o644)),
    }
}

/// A Secret or ConfigMap volume: which object (`kind` as messages name it) and which of its keys
/// go where.
struct ObjectKeys<'a> {
    kind: &'static str,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
}

impl ObjectKeys<'_> {
    /// Writes the object's keys into `dir`; a missing object is empty when optional, else an error.
    async fn write(
        &self,
        dir: &Path,
        data: Option<BTreeMap<String, Vec<u8>>>,
    ) -> std::result::Result<(), String> {
        let data = match data {
            Some(data) => data,
            None if self.optional => BTreeMap::new(),
            None => return Err(format!("{} \"{}\" not found", self.kind, self.name)),
        };
        write_items(dir, &data, self.items, self.default_mode, self.optional).await
    }
}

async fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> std::result::Result<(), String> {
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => {
                        write_file(&dir.join(&item.path), value, item.mode.or(default_mode)).await?
                    }
                    None if optional => {}
                    None => return Err(format!("key {} not found", item.key)),
                }
            }
        }
        None => {
            for (key, value) in data {
                write_file(&dir.join(key), value, default_mode).await?;
            }
        }
    }
    Ok(())
}

async fn write_downward(
    context: &VolumeContext<'_>,
    dir: &Path,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: Option<i32>,
) -> std::result::Result<(), String> {
    for item in items.unwrap_or_default() {
        let value = match &item.field_ref {
            Some(field) => field_value(
                context.pod,
                &field.field_path,
                context.pod_ip,
                context.host_ip,
            )
            .ok_or_else(|| format!("unsupported fieldPath {}", field.field_path))?,
            None => String::new(),
        };
        write_file(
            &dir.join(&item.path),
            value.as_bytes(),
            item.mode.or(default_mode),
        )
        .await?;
    }
    Ok(())
}

async fn create_dir(dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir, e))
}

async fn write_file(
    path: &Path,
    contents: &[u8],
    mode: Option<i32>,
) -> std::result::Result<(), String> {
    let describe = |e: std::io::Error| format!("writing {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(describe)?;
    }
    let staging = path.with_extension("devcluster-tmp");
    tokio::fs::write(&staging, contents)
        .await
        .map_err(describe)?;
    let mode = mode.unwrap_or(DEFAULT_FILE_MODE) as u32 & 0o777;
    tokio::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(describe)?;
    tokio::fs::rename(&staging, path).await.map_err(describe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_json::from_value(serde_yaml::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn a_projected_token_belongs_to_the_user_every_container_shares_else_the_fs_group() {
        let shared =
            pod("spec: {securityContext: {runAsUser: 7}, containers: [{name: a}, {name: b}]}");
        assert_eq!(token_ownership(&shared, None), (Some(7), None, 0o600));
        let mixed = pod(
            "spec: {securityContext: {runAsUser: 7, fsGroup: 9}, containers: [{name: a}, {name: b, securityContext: {runAsUser: 8}}]}",
        );
        assert_eq!(token_ownership(&mixed, None), (None, Some(9), 0o640));
        let root = pod("spec: {containers: [{name: a}]}");
        assert_eq!(token_ownership(&root, None), (None, None, 0o644));
        assert_eq!(token_ownership(&root, Some(0o600)), (None, None, 0o600));
    }
}

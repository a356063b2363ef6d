//! What the Helm chart puts in a cluster before ferrolb runs, done by the lab:
//! ferrolb's namespace, the `metallb.io` CRDs (applied from `deploy/crds` and
//! waited for until Established) and the membership Secret; Secrets in
//! ferrolb's namespace for the tests; and the readiness of the running
//! controller and speakers (`/readyz`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::cmd::Cmd;
use super::error::{LabError, Result};

/// ferrolb's namespace (the controller's and speakers' default).
pub const NAMESPACE: &str = "metallb-system";
/// The membership Secret the speakers read (the chart's name).
pub const MEMBERLIST_SECRET: &str = "ferrolb-memberlist";
/// Key of the membership key in that Secret.
pub const MEMBERLIST_KEY: &str = "secretkey";
/// The controller's `/metrics` and `/readyz` port.
pub const CONTROLLER_PORT: u16 = 7472;
/// The speaker's `/metrics` and `/readyz` port.
pub const SPEAKER_PORT: u16 = 7473;

const FIELD_MANAGER: &str = "ferrolb-lab";

/// `len` random bytes from `/dev/urandom`: a membership key.
pub fn random_key(len: usize) -> Result<Vec<u8>> {
    let path = Path::new("/dev/urandom");
    let mut key = vec![0u8; len];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|source| LabError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(key)
}

/// The CRDs in `dir` (one or more YAML documents per `.yaml` file).
pub fn read_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let io = |source| LabError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LabError::Io {
            path: file.clone(),
            source,
        })?;
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(doc).map_err(|e| LabError::Manifest {
                    path: file.clone(),
                    reason: e.to_string(),
                })?;
            if !value.is_null() {
                crds.push(from_value(value, &file)?);
            }
        }
    }
    Ok(crds)
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value, file: &Path) -> Result<T> {
    serde_json::from_value(value).map_err(|e| LabError::Manifest {
        path: file.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Everything the chart installs before ferrolb runs: [`install_crds`] and
/// [`ensure_memberlist_secret`]. Idempotent.
pub async fn install(client: &Client, crd_dir: &Path, limit: Duration) -> Result<()> {
    install_crds(client, crd_dir, limit).await?;
    ensure_memberlist_secret(client).await
}

/// Creates ferrolb's namespace, applies the CRDs of `crd_dir` and waits (at
/// most `limit`) until the API server serves them. Idempotent.
pub async fn install_crds(client: &Client, crd_dir: &Path, limit: Duration) -> Result<()> {
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    namespaces.patch(NAMESPACE, &ssa, &Patch::Apply(ns)).await?;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let wanted = read_crds(crd_dir)?;
    for crd in &wanted {
        let mut crd = crd.clone();
        crd.metadata.managed_fields = None;
        crds.patch(&crd.name_any(), &ssa, &Patch::Apply(&crd))
            .await?;
    }
    let start = Instant::now();
    for crd in &wanted {
        let name = crd.name_any();
        loop {
            if crds
                .get_opt(&name)
                .await?
                .is_some_and(|c| is_established(&c))
            {
                break;
            }
            if start.elapsed() >= limit {
                return Err(LabError::Timeout {
                    what: format!("CRD {name} Established"),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Secret `name` in ferrolb's namespace holding `data`.
fn secret(name: &str, data: BTreeMap<String, Vec<u8>>) -> Secret {
    let mut secret = Secret {
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                .collect(),
        ),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(NAMESPACE.to_owned());
    secret
}

/// Creates the membership Secret with a random key unless it exists (a key
/// there stays as it is).
pub async fn ensure_memberlist_secret(client: &Client) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    if secrets.get_opt(MEMBERLIST_SECRET).await?.is_none() {
        let data = BTreeMap::from([(MEMBERLIST_KEY.to_owned(), random_key(32)?)]);
        let secret = secret(MEMBERLIST_SECRET, data);
        match secrets.create(&PostParams::default(), &secret).await {
            // Created meanwhile by somebody else: theirs stays.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Creates Secret `name` in ferrolb's namespace with `data`, or replaces
/// the one there.
pub async fn put_secret(
    client: &Client,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let mut new = secret(name, data);
    match secrets.get_opt(name).await? {
        Some(old) => {
            new.metadata.resource_version = old.metadata.resource_version;
            secrets.replace(name, &PostParams::default(), &new).await?;
        }
        None => {
            secrets.create(&PostParams::default(), &new).await?;
        }
    }
    Ok(())
}

/// The HTTP status of `/readyz` on `port` inside `netns` (0: no answer).
pub fn readyz(netns: &str, port: u16) -> u16 {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut argv = super::curl_argv(&url, Duration::from_secs(2));
    argv.extend(["-o", "/dev/null", "-w", "%{http_code}"].map(str::to_owned));
    Cmd::in_netns(netns, &argv)
        .limit(Duration::from_secs(5))
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `crd` is Established: the API server serves its kind.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_crds_are_read() {
        let crds = read_crds(&super::super::repo_root().join("deploy/crds")).unwrap();
        let names: Vec<String> = crds.iter().map(|c| c.name_any()).collect();
        assert!(
            names.contains(&"ipaddresspools.metallb.io".to_owned()),
            "{names:?}"
        );
        assert!(names.len() >= 7, "{names:?}");
    }

    #[test]
    fn keys_are_random() {
        let a = random_key(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_key(32).unwrap());
    }
}

//! The generic provider: any cluster where ferrolb is installed, described
//! by environment variables. `integration/kind/run.sh suite` sets them for
//! kind; on another cluster set them by hand (docs/install.md).
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `FERROLB_E2E_KUBECONFIG` | kubeconfig of the cluster (selects this provider) | required |
//! | `FERROLB_E2E_CLIENT` | command prefix that runs a command on a host of the nodes' L2 segment (`docker exec ferrolb-client`, `ssh root@client`); empty: this machine | required (may be empty) |
//! | `FERROLB_E2E_POOL` | free addresses on that segment, outside every pool of the cluster: `first-last`, a CIDR; at least 20 | required |
//! | `FERROLB_E2E_NAMESPACE` | prefix of the scenarios' namespaces and objects | `ferrolb-e2e` |
//! | `FERROLB_E2E_CONFIG_NAMESPACE` | ferrolb's namespace (pools, L2Advertisements) | `metallb-system` |
//! | `FERROLB_E2E_LEGACY_CONFIGMAP` | name of the legacy ConfigMap ferrolb reads, which the legacy scenario may create (never replaces an existing one); unset: that scenario is skipped | unset |
//! | `FERROLB_E2E_ECHO_IMAGE` | echo image, answering with the pod name | agnhost 2.53 |
//! | `FERROLB_E2E_ECHO_ARGS` | its arguments, split on whitespace | `netexec --http-port=8080` for agnhost, none otherwise |
//! | `FERROLB_E2E_ECHO_PORT` | its port | `8080` |
//! | `FERROLB_E2E_ECHO_PATH` | the path it answers with the pod name | `/hostname` |
//! | `FERROLB_E2E_WAIT` | bound of each wait, seconds | `120` |

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{AddressRange, Cluster, CommandHost, EchoWorkload, Settings};

/// Kubeconfig of the cluster; when unset, the suite runs on the lab.
pub const KUBECONFIG: &str = "FERROLB_E2E_KUBECONFIG";
/// Command prefix to the client host.
pub const CLIENT: &str = "FERROLB_E2E_CLIENT";
/// Free addresses for the scenarios.
pub const POOL: &str = "FERROLB_E2E_POOL";
/// Prefix of the scenarios' namespaces.
pub const NAMESPACE: &str = "FERROLB_E2E_NAMESPACE";
/// ferrolb's namespace.
pub const CONFIG_NAMESPACE: &str = "FERROLB_E2E_CONFIG_NAMESPACE";
/// Legacy ConfigMap the legacy scenario may create.
pub const LEGACY_CONFIGMAP: &str = "FERROLB_E2E_LEGACY_CONFIGMAP";
/// Echo image.
pub const ECHO_IMAGE: &str = "FERROLB_E2E_ECHO_IMAGE";
/// Echo arguments.
pub const ECHO_ARGS: &str = "FERROLB_E2E_ECHO_ARGS";
/// Echo port.
pub const ECHO_PORT: &str = "FERROLB_E2E_ECHO_PORT";
/// Echo path.
pub const ECHO_PATH: &str = "FERROLB_E2E_ECHO_PATH";
/// Wait bound, seconds.
pub const WAIT: &str = "FERROLB_E2E_WAIT";
/// Comma-separated scenario names to run (all when unset).
pub const SCENARIOS: &str = "FERROLB_E2E_SCENARIOS";

/// The echo workload from `FERROLB_E2E_ECHO_*` (see the module's table).
pub fn echo_from(get: &dyn Fn(&str) -> Option<String>) -> Result<EchoWorkload> {
    let mut e = EchoWorkload::default();
    if let Some(image) = get(ECHO_IMAGE).filter(|s| !s.trim().is_empty()) {
        if !image.contains("agnhost") {
            e.args.clear();
        }
        e.image = image.trim().to_owned();
    }
    if let Some(args) = get(ECHO_ARGS) {
        e.args = args.split_whitespace().map(str::to_owned).collect();
    }
    if let Some(port) = get(ECHO_PORT) {
        e.port = port
            .trim()
            .parse()
            .with_context(|| format!("{ECHO_PORT}={port:?} is not a port"))?;
    }
    if let Some(path) = get(ECHO_PATH) {
        if !path.starts_with('/') {
            bail!("{ECHO_PATH}={path:?} must start with /");
        }
        e.path = path;
    }
    Ok(e)
}

/// `FERROLB_E2E_WAIT` as a duration (default 120 s).
pub fn wait_from(get: &dyn Fn(&str) -> Option<String>, default: Duration) -> Result<Duration> {
    match get(WAIT) {
        None => Ok(default),
        Some(s) => {
            let secs: u64 = s
                .trim()
                .parse()
                .with_context(|| format!("{WAIT}={s:?} is not a number of seconds"))?;
            Ok(Duration::from_secs(secs.max(1)))
        }
    }
}

/// Settings of the generic provider from `get` (the environment, or a map
/// in tests); `None` when `FERROLB_E2E_KUBECONFIG` is unset.
pub fn settings_from(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, CommandHost, Settings)>> {
    let Some(kubeconfig) = get(KUBECONFIG).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let client = get(CLIENT).with_context(|| {
        format!("{KUBECONFIG} is set but {CLIENT} is not: set it to a command prefix that runs commands on a host of the nodes' layer-2 segment (e.g. `docker exec ferrolb-client`), or to the empty string for this machine")
    })?;
    let pool = get(POOL).with_context(|| {
        format!("{KUBECONFIG} is set but {POOL} is not: set it to free addresses of the nodes' segment, outside every pool (e.g. 172.18.255.150-172.18.255.199)")
    })?;
    let pool = AddressRange::parse(&pool).context(POOL)?;
    let wait = wait_from(get, Duration::from_secs(120))?;
    let settings = Settings {
        prefix: get(NAMESPACE)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ferrolb-e2e".to_owned()),
        config_namespace: get(CONFIG_NAMESPACE)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "metallb-system".to_owned()),
        pool,
        echo: echo_from(get)?,
        legacy_configmap: get(LEGACY_CONFIGMAP).filter(|s| !s.is_empty()),
        wait,
        scenario_limit: wait * 8,
    };
    Ok(Some((kubeconfig, CommandHost::new(&client), settings)))
}

/// The cluster the environment describes, or `None` when
/// `FERROLB_E2E_KUBECONFIG` is unset.
pub async fn from_env() -> Result<Option<Cluster>> {
    let get = |k: &str| std::env::var(k).ok();
    let Some((kubeconfig, host, settings)) = settings_from(&get)? else {
        return Ok(None);
    };
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
        .with_context(|| format!("reading {KUBECONFIG}={kubeconfig}"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {kubeconfig}"))?;
    let kube = kube::Client::try_from(config).context("Kubernetes client")?;
    Ok(Some(Cluster {
        name: format!("cluster of {kubeconfig}"),
        kube,
        host: Arc::new(host),
        settings: Arc::new(settings),
    }))
}

/// The scenario names `FERROLB_E2E_SCENARIOS` selects (all when unset).
pub fn selected(
    get: &dyn Fn(&str) -> Option<String>,
    all: &[&'static str],
) -> Result<Vec<&'static str>> {
    let Some(list) = get(SCENARIOS).filter(|s| !s.trim().is_empty()) else {
        return Ok(all.to_vec());
    };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match all.iter().find(|n| **n == name) {
            Some(n) => out.push(*n),
            None => bail!("{SCENARIOS}: unknown scenario {name:?} (known: {all:?})"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn unset_kubeconfig_means_no_cluster() {
        assert!(settings_from(&env(&[])).unwrap().is_none());
        assert!(settings_from(&env(&[(KUBECONFIG, "")])).unwrap().is_none());
    }

    #[test]
    fn kind_settings() {
        let (kc, host, s) = settings_from(&env(&[
            (KUBECONFIG, "/tmp/kubeconfig"),
            (CLIENT, "docker exec ferrolb-client"),
            (POOL, "172.18.255.150-172.18.255.199"),
            (CONFIG_NAMESPACE, "metallb-system"),
            (LEGACY_CONFIGMAP, "config"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(kc, "/tmp/kubeconfig");
        assert_eq!(host.prefix(), ["docker", "exec", "ferrolb-client"]);
        assert_eq!(s.pool.len(), 50);
        assert_eq!(s.prefix, "ferrolb-e2e");
        assert_eq!(s.legacy_configmap.as_deref(), Some("config"));
        assert_eq!(s.echo, EchoWorkload::default());
        assert_eq!(s.wait, Duration::from_secs(120));
    }

    #[test]
    fn missing_client_or_pool_is_explained() {
        let e = settings_from(&env(&[(KUBECONFIG, "k"), (POOL, "198.51.100.0/27")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(CLIENT), "{e}");
        let e = settings_from(&env(&[(KUBECONFIG, "k"), (CLIENT, "")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(POOL), "{e}");
        let e = settings_from(&env(&[(KUBECONFIG, "k"), (CLIENT, ""), (POOL, "x")])).unwrap_err();
        assert!(format!("{e:#}").contains("not an IP address"), "{e:#}");
    }

    #[test]
    fn echo_overrides() {
        let e = echo_from(&env(&[(ECHO_IMAGE, "example.org/hello:1")])).unwrap();
        assert_eq!(e.image, "example.org/hello:1");
        assert!(
            e.args.is_empty(),
            "agnhost's arguments dropped for another image"
        );
        let e = echo_from(&env(&[
            (ECHO_IMAGE, "example.org/hello:1"),
            (ECHO_ARGS, "serve --port 9000"),
            (ECHO_PORT, "9000"),
            (ECHO_PATH, "/"),
        ]))
        .unwrap();
        assert_eq!(e.args, ["serve", "--port", "9000"]);
        assert_eq!((e.port, e.path.as_str()), (9000, "/"));
        assert!(echo_from(&env(&[(ECHO_PORT, "http")])).is_err());
        assert!(echo_from(&env(&[(ECHO_PATH, "hostname")])).is_err());
    }

    #[test]
    fn scenario_selection() {
        let all = ["a", "b", "c"];
        assert_eq!(selected(&env(&[]), &all).unwrap(), all);
        assert_eq!(
            selected(&env(&[(SCENARIOS, " c, a ")]), &all).unwrap(),
            ["c", "a"]
        );
        assert!(selected(&env(&[(SCENARIOS, "d")]), &all).is_err());
    }
}

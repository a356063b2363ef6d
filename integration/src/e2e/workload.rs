//! The scenarios' workload: the echo Deployment and LoadBalancer Services
//! in the scenario's namespace.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

use super::objects::is_not_found;
use super::{Scope, apply};
use crate::lab::eventually;

impl Scope {
    /// The echo Deployment `name` with `replicas` pods; waits until they
    /// all run and are ready and returns their names.
    pub async fn echo(&self, name: &str, replicas: usize) -> Result<BTreeSet<String>> {
        let echo = &self.settings().echo;
        let mut container = json!({
            "name": "echo",
            "image": echo.image,
            "ports": [{"containerPort": echo.port, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": echo.path, "port": echo.port},
                               "periodSeconds": 2},
        });
        if !echo.args.is_empty() {
            container["args"] = json!(echo.args);
        }
        let api: Api<Deployment> = Api::namespaced(self.kube(), &self.ns);
        apply(
            &api,
            name,
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [container]}
                    }
                }
            }),
        )
        .await?;
        let pods: Api<Pod> = Api::namespaced(self.kube(), &self.ns);
        let lp = ListParams::default().labels(&format!("app={name}"));
        Ok(eventually(
            &format!("{replicas} {name} pods ready"),
            self.settings().wait * 2,
            || async {
                let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
                let ready: BTreeSet<String> = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                if ready.len() == replicas {
                    Ok(ready)
                } else {
                    Err(format!("ready: {ready:?}"))
                }
            },
        )
        .await?)
    }

    /// A LoadBalancer Service `name` selecting the pods of `app`, with
    /// `ports` (each forwarded to the echo port) and `annotations`.
    pub async fn service(
        &self,
        name: &str,
        app: &str,
        ports: &[u16],
        annotations: &[(&str, String)],
    ) -> Result<()> {
        let ann: BTreeMap<&str, &str> = annotations.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let port = self.settings().echo.port;
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        apply(
            &api,
            name,
            &json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": self.ns, "annotations": ann},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": app},
                    "ports": ports.iter().map(|p| json!({
                        "name": format!("p{p}"), "port": p, "targetPort": port, "protocol": "TCP"
                    })).collect::<Vec<_>>(),
                }
            }),
        )
        .await?;
        Ok(())
    }

    /// Deletes Service `name` and waits until it is gone.
    pub async fn delete_service(&self, name: &str) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        match api.delete(name, &DeleteParams::default()).await {
            Err(e) if !is_not_found(&e) => return Err(e).context(format!("deleting {name}")),
            _ => {}
        }
        Ok(eventually(
            &format!("Service {name} gone"),
            self.settings().wait,
            || async {
                match api.get_opt(name).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err("still there".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?)
    }

    /// Service `name` as it is now.
    pub async fn get_service(&self, name: &str) -> Result<Service> {
        let api: Api<Service> = Api::namespaced(self.kube(), &self.ns);
        api.get(name)
            .await
            .with_context(|| format!("reading Service {name}"))
    }
}

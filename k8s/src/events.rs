//! Publishing `events.k8s.io/v1` Events without a cache.
//!
//! kube's `Recorder` keeps every event it published for six minutes to aggregate
//! repeats; with thousands of Services that cache was the largest part of the
//! controller's memory. ferrolb's loops already publish an event only when something
//! changed (a new address, a new failure message), so there is nothing to aggregate:
//! this recorder writes each event once and forgets it. Same calling shape as kube's.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as ApiEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

pub use kube::runtime::events::{Event, EventType, Reporter};

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("reporter", &self.reporter)
            .finish()
    }
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Creates one Event about `reference` (in its namespace, `default` without one).
    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> kube::Result<()> {
        let ns = reference.namespace.as_deref().unwrap_or("default");
        let name = reference.name.as_deref().unwrap_or("object");
        let api: Api<ApiEvent> = Api::namespaced(self.client.clone(), ns);
        let now = Timestamp::now();
        let event = ApiEvent {
            metadata: ObjectMeta {
                // Unique per object and instant, as client-go names events.
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            regarding: Some(reference.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

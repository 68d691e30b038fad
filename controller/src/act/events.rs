//! Events: what a person reads of each step, cut to what Kubernetes accepts.

use super::*;

/// The longest note Kubernetes accepts in an event.
pub const EVENT_NOTE_MAX: usize = 1024;

/// A normal event whose action is its reason.
pub fn event(reason: &str, note: String) -> Event {
    Event { type_: EventType::Normal, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None }
}

/// An event about member `member` (its pod, in `namespace`) of the cluster. The member is the event's related
/// object, so events of one reason about different members are never folded into one series (which would show
/// the first member's note for all of them); the note names the member too.
pub fn member_event(reason: &str, note: String, namespace: &str, member: &str) -> Event {
    let pod = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(member.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    Event { secondary: Some(pod), ..event(reason, note) }
}

/// Publishes an event; an event that cannot be written is logged, never a reason to fail the step.
pub async fn publish(recorder: &Recorder, cluster: &EtcdCluster, mut event: Event) {
    tracing::info!(cluster = %cluster.name_any(), reason = %event.reason, note = ?event.note, "event");
    // Kubernetes refuses an event whose note passes 1 KiB: cut, never dropped.
    event.note = event.note.map(|note| shorten(&note, EVENT_NOTE_MAX));
    if let Err(error) = recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "could not publish an event");
    }
}

//! Namespace deletion: a namespace marked for deletion is emptied (every namespaced object
//! in it deleted through the API, so finalizers and propagation apply), then deleted.

use std::time::Duration;

use tokio::task::JoinSet;

use super::client::{LocalApi, path, resource};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use super::{Caches, is_deleting, name_of};
use crate::cluster::api::resources;

pub struct NamespaceController {
    api: LocalApi,
    caches: Caches,
}

pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches) {
    let queue = WorkQueue::new();
    super::feed(
        tasks,
        &queue,
        &caches.namespaces,
        vec![(caches.namespaces.clone(), super::same_key as super::Mapper)],
        caches,
    );
    super::spawn_workers(
        tasks,
        NamespaceController {
            api,
            caches: caches.clone(),
        },
        &queue,
        1,
    );
}

#[async_trait::async_trait]
impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(ns) = self.caches.namespaces.get(key) else {
            return Ok(Action::await_change());
        };
        if !is_deleting(&ns) {
            return Ok(Action::await_change());
        }
        let name = name_of(&ns);
        let mut left = 0;
        for r in resources::all().iter().filter(|r| r.namespaced) {
            let list = self.api.get(&path(r, Some(name), None, None)).await?;
            for item in list["items"].as_array().into_iter().flatten() {
                left += 1;
                if !is_deleting(item) {
                    let p = path(r, Some(name), Some(name_of(item)), None);
                    self.api.delete(&p, "Background").await?;
                }
            }
        }
        if left > 0 {
            return Ok(Action::requeue(Duration::from_millis(300)));
        }
        // Empty: this delete removes the namespace itself.
        self.api
            .delete(
                &path(resource("v1", "Namespace"), None, Some(name), None),
                "Background",
            )
            .await?;
        Ok(Action::await_change())
    }
}

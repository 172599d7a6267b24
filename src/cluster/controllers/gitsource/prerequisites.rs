//! What a reconcile of a source needs before it fetches: the sources it depends on
//! (`spec.dependsOn`) `Ready`, and the variables of `spec.postBuild` read from their
//! ConfigMaps and Secrets. A dependency not ready makes the source wait (and look again
//! shortly); a missing ConfigMap or Secret that is not `optional`, or a key that is not a
//! variable name, stalls it. Messages name objects and keys, never values.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use super::GitSyncController;
use super::postbuild::PostBuild;
use super::reconcile::{Pass, Retry, Stop};
use crate::cluster::controllers::client::{path, resource};
use crate::cluster::controllers::runtime::ReconcileError;
use crate::manifest::substitute::{Variables, valid_name};

/// How soon a source waiting for a dependency looks again (at most its interval).
const DEPENDENCY_RECHECK: Duration = Duration::from_secs(5);

/// Why a dependency (the GitSource as cached, if it exists) is not ready yet; `None` when it
/// is `Ready` for its current generation.
pub fn dependency_not_ready(source: Option<&Value>) -> Option<String> {
    let Some(source) = source else {
        return Some("does not exist".into());
    };
    let ready = source
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let generation = source.pointer("/metadata/generation");
    match ready {
        Some(r) if r["status"] == "True" && r.get("observedGeneration") == generation => None,
        Some(r) if r["status"] == "True" => Some("has a spec change not yet applied".into()),
        Some(r) => Some(format!(
            "is not Ready ({}: {})",
            r["reason"].as_str().unwrap_or(""),
            r["message"].as_str().unwrap_or("")
        )),
        None => Some("has not been reconciled yet".into()),
    }
}

impl GitSyncController {
    /// Stops the reconcile while a source of `spec.dependsOn` is not `Ready`.
    pub(super) fn dependencies_ready(&self, pass: &Pass<'_>) -> Result<(), Stop> {
        for dependency in &pass.source.spec.depends_on {
            let namespace = dependency.namespace.as_deref().unwrap_or(pass.namespace);
            let key = format!("{namespace}/{}", dependency.name);
            if key == pass.key {
                return Err(Stop::stalled(
                    "DependencyNotReady",
                    "spec.dependsOn names the source itself".into(),
                ));
            }
            let cached = self.sources.get(&key);
            if let Some(why) = dependency_not_ready(cached.as_deref()) {
                return Err(Stop::Status {
                    reason: "DependencyNotReady",
                    message: format!("dependency GitSource {key} {why}"),
                    stalled: false,
                    retry: Retry::After(DEPENDENCY_RECHECK.min(pass.interval)),
                });
            }
        }
        Ok(())
    }

    /// The post-build steps of the source: its variables (from `substituteFrom` in order,
    /// then `substitute`, each overriding the ones before) and its target namespace.
    pub(super) async fn post_build(&self, pass: &Pass<'_>) -> Result<PostBuild, Stop> {
        let spec = &pass.source.spec;
        let mut post = PostBuild {
            target_namespace: spec.target_namespace.clone(),
            ..PostBuild::default()
        };
        let Some(build) = &spec.post_build else {
            return Ok(post);
        };
        let failed = |message: String| Stop::stalled("SubstitutionFailed", message);
        let mut variables = Variables::new();
        for from in &build.substitute_from {
            let what = format!("{} {}/{}", from.kind, pass.namespace, from.name);
            let secret = match from.kind.as_str() {
                "ConfigMap" => false,
                "Secret" => true,
                other => {
                    return Err(failed(format!(
                        "spec.postBuild.substituteFrom names a {other}: only ConfigMap and \
                         Secret hold variables"
                    )));
                }
            };
            let p = path(
                resource("v1", &from.kind),
                Some(pass.namespace),
                Some(&from.name),
                None,
            );
            let object = match self.api.get(&p).await {
                Ok(o) => o,
                Err(e) if e.is_not_found() && from.optional => continue,
                Err(e) if e.is_not_found() => {
                    return Err(failed(format!(
                        "the {what} named by spec.postBuild.substituteFrom does not exist (mark \
                         it optional: true if the source may go without it)"
                    )));
                }
                Err(e) => return Err(ReconcileError::Api(e).into()),
            };
            let data = object["data"].as_object().cloned().unwrap_or_default();
            for (key, value) in data {
                if !valid_name(&key) {
                    return Err(failed(format!(
                        "key {key:?} of the {what} is not a variable name (letters, digits and \
                         _, not starting with a digit)"
                    )));
                }
                let value = if secret {
                    value
                        .as_str()
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| {
                            failed(format!("key {key:?} of the {what} is not UTF-8 text"))
                        })?
                } else {
                    value.as_str().unwrap_or("").to_string()
                };
                if secret {
                    post.secret_values.push(value.clone());
                }
                variables.insert(key, value);
            }
        }
        for (key, value) in &build.substitute {
            if !valid_name(key) {
                return Err(failed(format!(
                    "spec.postBuild.substitute: {key:?} is not a variable name (letters, digits \
                     and _, not starting with a digit)"
                )));
            }
            variables.insert(key.clone(), value.clone());
        }
        post.variables = Some(variables);
        Ok(post)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dependency_is_ready_only_for_its_current_generation() {
        assert_eq!(
            dependency_not_ready(None).as_deref(),
            Some("does not exist")
        );
        let source = |status: &str, observed: i64| {
            json!({"metadata": {"generation": 2}, "status": {"conditions": [
                {"type": "Ready", "status": status, "reason": "Progressing", "message": "m",
                 "observedGeneration": observed}]}})
        };
        assert_eq!(dependency_not_ready(Some(&source("True", 2))), None);
        assert!(dependency_not_ready(Some(&source("True", 1))).is_some());
        assert_eq!(
            dependency_not_ready(Some(&source("False", 2))).as_deref(),
            Some("is not Ready (Progressing: m)")
        );
        assert!(dependency_not_ready(Some(&json!({"metadata": {}}))).is_some());
    }
}

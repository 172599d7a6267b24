//! Flux's post-build steps for one commit of a source: its variables (`spec.postBuild`)
//! substituted in the rendered manifests and its `spec.targetNamespace` given to every
//! namespaced object. Both run at load time, the same way at every commit, so an unchanged
//! file's objects compare equal between commits; [`PostBuild::fingerprint`] changes when the
//! variables or the namespace do, and the index of the last commit is then not reused (every
//! file is read again, every object compared).
//!
//! Secret values stay in memory: [`PostBuild::redact`] takes them out of any message.

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::manifest::kinds;
use crate::manifest::kustomize::Rendered;
use crate::manifest::load::{Input, Kustomized};
use crate::manifest::substitute::{Variables, substitute, substitute_value};

/// What is done to a commit's manifests after rendering.
#[derive(Debug, Clone, Default)]
pub struct PostBuild {
    /// `None`: no `spec.postBuild`, nothing substituted (as Flux).
    pub variables: Option<Variables>,
    /// The values that came from Secrets, kept out of messages.
    pub secret_values: Vec<String>,
    pub target_namespace: Option<String>,
}

impl PostBuild {
    /// A digest of the variables and the target namespace: what the index compares.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        let text = json!({"variables": self.variables, "targetNamespace": self.target_namespace});
        hash.update(text.to_string().as_bytes());
        hex::encode(hash.finalize())
    }

    /// The commit's inputs with the variables substituted: a file's text before it is
    /// parsed, a kustomization's objects once rendered.
    pub fn inputs(&self, inputs: Vec<Input>) -> Vec<Input> {
        let Some(variables) = &self.variables else {
            return inputs;
        };
        inputs
            .into_iter()
            .map(|input| match input {
                Input::File { path, bytes } => match String::from_utf8(bytes) {
                    Ok(text) => Input::File {
                        path,
                        bytes: substitute(&text, variables).into_bytes(),
                    },
                    // Not text: the loader says so.
                    Err(e) => Input::File {
                        path,
                        bytes: e.into_bytes(),
                    },
                },
                Input::Kustomized(k) => match &k.rendered {
                    Ok(rendered) => Input::Kustomized(Arc::new(Kustomized {
                        path: k.path.clone(),
                        rendered: Ok(rendered
                            .iter()
                            .map(|r| Rendered {
                                value: substitute_value(&r.value, variables),
                                ..r.clone()
                            })
                            .collect()),
                    })),
                    Err(_) => Input::Kustomized(k),
                },
                other => other,
            })
            .collect()
    }

    /// Gives a namespaced object the target namespace (a kind berth does not know, a custom
    /// resource's, is taken as namespaced, as kustomize takes it).
    pub fn object(&self, object: &mut Value) {
        let Some(namespace) = &self.target_namespace else {
            return;
        };
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let kind = object["kind"].as_str().unwrap_or("");
        if kinds::find(api_version, kind).is_some_and(|k| !k.namespaced) {
            return;
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), json!(namespace));
        }
    }

    /// `message` with every Secret value (of four characters or more: shorter ones would
    /// mask ordinary words) replaced by `***`.
    pub fn redact(&self, message: String) -> String {
        self.secret_values
            .iter()
            .filter(|v| v.chars().count() >= 4)
            .fold(message, |m, v| m.replace(v.as_str(), "***"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(target: Option<&str>, vars: &[(&str, &str)]) -> PostBuild {
        PostBuild {
            variables: Some(
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            secret_values: vec!["s3cr3t-value".into(), "ab".into()],
            target_namespace: target.map(str::to_string),
        }
    }

    #[test]
    fn the_target_namespace_overrides_namespaced_objects_only() {
        let p = post(Some("team"), &[]);
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "written"}});
        let mut bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}});
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
        let mut role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "r"}});
        for o in [&mut cm, &mut bare, &mut ns, &mut role] {
            p.object(o);
        }
        assert_eq!(cm["metadata"]["namespace"], "team");
        assert_eq!(bare["metadata"]["namespace"], "team");
        assert!(ns["metadata"].get("namespace").is_none());
        assert!(role["metadata"].get("namespace").is_none());
    }

    #[test]
    fn the_fingerprint_changes_with_a_variable_or_the_namespace() {
        let a = post(Some("team"), &[("A", "1")]);
        assert_eq!(
            a.fingerprint(),
            post(Some("team"), &[("A", "1")]).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            post(Some("team"), &[("A", "2")]).fingerprint()
        );
        assert_ne!(a.fingerprint(), post(None, &[("A", "1")]).fingerprint());
        assert_ne!(
            PostBuild::default().fingerprint(),
            post(None, &[]).fingerprint(),
            "postBuild with no variables still substitutes (unset variables are empty)"
        );
    }

    #[test]
    fn secret_values_are_redacted_from_messages() {
        let p = post(None, &[]);
        assert_eq!(
            p.redact("x.yaml:3: invalid value \"s3cr3t-value\" (ab)".into()),
            "x.yaml:3: invalid value \"***\" (ab)"
        );
    }

    #[test]
    fn files_are_substituted_before_parsing_and_nothing_without_post_build() {
        let file = || Input::File {
            path: "a.yaml".into(),
            bytes: b"replicas: ${N:=2}\n".to_vec(),
        };
        let text = |inputs: Vec<Input>| match inputs.into_iter().next() {
            Some(Input::File { bytes, .. }) => String::from_utf8(bytes).unwrap(),
            _ => panic!("a file"),
        };
        assert_eq!(text(post(None, &[]).inputs(vec![file()])), "replicas: 2\n");
        assert_eq!(
            text(PostBuild::default().inputs(vec![file()])),
            "replicas: ${N:=2}\n"
        );
    }
}

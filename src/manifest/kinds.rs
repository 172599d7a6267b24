//! Every kind `berth validate` knows: the built-in Kubernetes kinds of the k8s-openapi version
//! berth is built with, and berth's own `berth.dev/v1` kinds.

use k8s_openapi::{api, apiextensions_apiserver, kube_aggregator};
use schemars::JsonSchema;

use super::gitsource::GitSource;

/// The Kubernetes minor version whose API types berth is built with.
pub const KUBERNETES_VERSION: &str = "1.37";

/// What berth knows of one kind.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The lower-case plural used in URLs (`deployments`).
    pub plural: &'static str,
    pub namespaced: bool,
    /// Whether a `<Kind>List` exists and the kind can be listed.
    pub listable: bool,
    /// Generates the kind's JSON Schema from its Rust type.
    pub(crate) schema: fn() -> schemars::Schema,
}

impl KindInfo {
    pub fn group(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    pub fn version(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version, |(_, v)| v)
    }

    /// The schema's file name under `schemas/`, as kubeconform names them
    /// (`deployment-apps-v1.json`, `pod-v1.json`).
    pub fn schema_file(&self) -> String {
        let group = self.group().split('.').next().unwrap_or("");
        if group.is_empty() {
            format!("{}-{}.json", self.kind.to_lowercase(), self.version())
        } else {
            format!(
                "{}-{}-{}.json",
                self.kind.to_lowercase(),
                group,
                self.version()
            )
        }
    }
}

fn schema_of<T: JsonSchema>() -> schemars::Schema {
    schemars::SchemaGenerator::default().into_root_schema_for::<T>()
}

macro_rules! kinds {
    ($(($ty:path, $api_version:literal, $plural:literal, $namespaced:literal, $listable:literal),)*) => {
        /// Every known kind, sorted by API version then kind.
        pub static KINDS: &[KindInfo] = &[
            $(KindInfo {
                api_version: $api_version,
                kind: <$ty as k8s_openapi::Resource>::KIND,
                plural: $plural,
                namespaced: $namespaced,
                listable: $listable,
                schema: schema_of::<$ty>,
            },)*
            KindInfo {
                api_version: "berth.dev/v1",
                kind: "GitSource",
                plural: "gitsources",
                namespaced: true,
                listable: true,
                schema: schema_of::<GitSource>,
            },
        ];
    };
}

kinds! {
    (api::admissionregistration::v1::MutatingAdmissionPolicy, "admissionregistration.k8s.io/v1", "mutatingadmissionpolicies", false, true),
    (api::admissionregistration::v1::MutatingAdmissionPolicyBinding, "admissionregistration.k8s.io/v1", "mutatingadmissionpolicybindings", false, true),
    (api::admissionregistration::v1::MutatingWebhookConfiguration, "admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", false, true),
    (api::admissionregistration::v1::ValidatingAdmissionPolicy, "admissionregistration.k8s.io/v1", "validatingadmissionpolicies", false, true),
    (api::admissionregistration::v1::ValidatingAdmissionPolicyBinding, "admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", false, true),
    (api::admissionregistration::v1::ValidatingWebhookConfiguration, "admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", false, true),
    (api::admissionregistration::v1alpha1::MutatingAdmissionPolicy, "admissionregistration.k8s.io/v1alpha1", "mutatingadmissionpolicies", false, true),
    (api::admissionregistration::v1alpha1::MutatingAdmissionPolicyBinding, "admissionregistration.k8s.io/v1alpha1", "mutatingadmissionpolicybindings", false, true),
    (api::admissionregistration::v1beta1::MutatingAdmissionPolicy, "admissionregistration.k8s.io/v1beta1", "mutatingadmissionpolicies", false, true),
    (api::admissionregistration::v1beta1::MutatingAdmissionPolicyBinding, "admissionregistration.k8s.io/v1beta1", "mutatingadmissionpolicybindings", false, true),
    (api::apiserverinternal::v1alpha1::StorageVersion, "internal.apiserver.k8s.io/v1alpha1", "storageversions", false, true),
    (api::apps::v1::ControllerRevision, "apps/v1", "controllerrevisions", true, true),
    (api::apps::v1::DaemonSet, "apps/v1", "daemonsets", true, true),
    (api::apps::v1::Deployment, "apps/v1", "deployments", true, true),
    (api::apps::v1::ReplicaSet, "apps/v1", "replicasets", true, true),
    (api::apps::v1::StatefulSet, "apps/v1", "statefulsets", true, true),
    (api::authentication::v1::SelfSubjectReview, "authentication.k8s.io/v1", "selfsubjectreviews", false, false),
    (api::authentication::v1::TokenReview, "authentication.k8s.io/v1", "tokenreviews", false, false),
    (api::authorization::v1::LocalSubjectAccessReview, "authorization.k8s.io/v1", "localsubjectaccessreviews", true, false),
    (api::authorization::v1::SelfSubjectAccessReview, "authorization.k8s.io/v1", "selfsubjectaccessreviews", false, false),
    (api::authorization::v1::SelfSubjectRulesReview, "authorization.k8s.io/v1", "selfsubjectrulesreviews", false, false),
    (api::authorization::v1::SubjectAccessReview, "authorization.k8s.io/v1", "subjectaccessreviews", false, false),
    (api::autoscaling::v1::HorizontalPodAutoscaler, "autoscaling/v1", "horizontalpodautoscalers", true, true),
    (api::autoscaling::v2::HorizontalPodAutoscaler, "autoscaling/v2", "horizontalpodautoscalers", true, true),
    (api::batch::v1::CronJob, "batch/v1", "cronjobs", true, true),
    (api::batch::v1::Job, "batch/v1", "jobs", true, true),
    (api::certificates::v1::CertificateSigningRequest, "certificates.k8s.io/v1", "certificatesigningrequests", false, true),
    (api::certificates::v1::ClusterTrustBundle, "certificates.k8s.io/v1", "clustertrustbundles", false, true),
    (api::certificates::v1::PodCertificateRequest, "certificates.k8s.io/v1", "podcertificaterequests", true, true),
    (api::certificates::v1beta1::ClusterTrustBundle, "certificates.k8s.io/v1beta1", "clustertrustbundles", false, true),
    (api::certificates::v1beta1::PodCertificateRequest, "certificates.k8s.io/v1beta1", "podcertificaterequests", true, true),
    (api::coordination::v1::Lease, "coordination.k8s.io/v1", "leases", true, true),
    (api::coordination::v1alpha2::LeaseCandidate, "coordination.k8s.io/v1alpha2", "leasecandidates", true, true),
    (api::coordination::v1beta1::LeaseCandidate, "coordination.k8s.io/v1beta1", "leasecandidates", true, true),
    (api::core::v1::Binding, "v1", "bindings", true, false),
    (api::core::v1::ComponentStatus, "v1", "componentstatuses", false, true),
    (api::core::v1::ConfigMap, "v1", "configmaps", true, true),
    (api::core::v1::Endpoints, "v1", "endpoints", true, true),
    (api::core::v1::Event, "v1", "events", true, true),
    (api::core::v1::LimitRange, "v1", "limitranges", true, true),
    (api::core::v1::Namespace, "v1", "namespaces", false, true),
    (api::core::v1::Node, "v1", "nodes", false, true),
    (api::core::v1::PersistentVolume, "v1", "persistentvolumes", false, true),
    (api::core::v1::PersistentVolumeClaim, "v1", "persistentvolumeclaims", true, true),
    (api::core::v1::Pod, "v1", "pods", true, true),
    (api::core::v1::PodTemplate, "v1", "podtemplates", true, true),
    (api::core::v1::ReplicationController, "v1", "replicationcontrollers", true, true),
    (api::core::v1::ResourceQuota, "v1", "resourcequotas", true, true),
    (api::core::v1::Secret, "v1", "secrets", true, true),
    (api::core::v1::Service, "v1", "services", true, true),
    (api::core::v1::ServiceAccount, "v1", "serviceaccounts", true, true),
    (api::discovery::v1::EndpointSlice, "discovery.k8s.io/v1", "endpointslices", true, true),
    (api::events::v1::Event, "events.k8s.io/v1", "events", true, true),
    (api::flowcontrol::v1::FlowSchema, "flowcontrol.apiserver.k8s.io/v1", "flowschemas", false, true),
    (api::flowcontrol::v1::PriorityLevelConfiguration, "flowcontrol.apiserver.k8s.io/v1", "prioritylevelconfigurations", false, true),
    (api::lifecycle::v1alpha1::Eviction, "lifecycle.k8s.io/v1alpha1", "evictions", true, true),
    (api::lifecycle::v1alpha1::EvictionRequest, "lifecycle.k8s.io/v1alpha1", "evictionrequests", true, true),
    (api::networking::v1::Ingress, "networking.k8s.io/v1", "ingresses", true, true),
    (api::networking::v1::IngressClass, "networking.k8s.io/v1", "ingressclasses", false, true),
    (api::networking::v1::IPAddress, "networking.k8s.io/v1", "ipaddresses", false, true),
    (api::networking::v1::NetworkPolicy, "networking.k8s.io/v1", "networkpolicies", true, true),
    (api::networking::v1::ServiceCIDR, "networking.k8s.io/v1", "servicecidrs", false, true),
    (api::node::v1::RuntimeClass, "node.k8s.io/v1", "runtimeclasses", false, true),
    (api::policy::v1::PodDisruptionBudget, "policy/v1", "poddisruptionbudgets", true, true),
    (api::rbac::v1::ClusterRole, "rbac.authorization.k8s.io/v1", "clusterroles", false, true),
    (api::rbac::v1::ClusterRoleBinding, "rbac.authorization.k8s.io/v1", "clusterrolebindings", false, true),
    (api::rbac::v1::Role, "rbac.authorization.k8s.io/v1", "roles", true, true),
    (api::rbac::v1::RoleBinding, "rbac.authorization.k8s.io/v1", "rolebindings", true, true),
    (api::resource::v1::DeviceClass, "resource.k8s.io/v1", "deviceclasses", false, true),
    (api::resource::v1::DeviceTaintRule, "resource.k8s.io/v1", "devicetaintrules", false, true),
    (api::resource::v1::ResourceClaim, "resource.k8s.io/v1", "resourceclaims", true, true),
    (api::resource::v1::ResourceClaimTemplate, "resource.k8s.io/v1", "resourceclaimtemplates", true, true),
    (api::resource::v1::ResourceSlice, "resource.k8s.io/v1", "resourceslices", false, true),
    (api::resource::v1alpha3::DeviceTaintRule, "resource.k8s.io/v1alpha3", "devicetaintrules", false, true),
    (api::resource::v1alpha3::ResourcePoolStatusRequest, "resource.k8s.io/v1alpha3", "resourcepoolstatusrequests", false, true),
    (api::resource::v1beta1::DeviceClass, "resource.k8s.io/v1beta1", "deviceclasses", false, true),
    (api::resource::v1beta1::ResourceClaim, "resource.k8s.io/v1beta1", "resourceclaims", true, true),
    (api::resource::v1beta1::ResourceClaimTemplate, "resource.k8s.io/v1beta1", "resourceclaimtemplates", true, true),
    (api::resource::v1beta1::ResourceSlice, "resource.k8s.io/v1beta1", "resourceslices", false, true),
    (api::resource::v1beta2::DeviceClass, "resource.k8s.io/v1beta2", "deviceclasses", false, true),
    (api::resource::v1beta2::DeviceTaintRule, "resource.k8s.io/v1beta2", "devicetaintrules", false, true),
    (api::resource::v1beta2::ResourceClaim, "resource.k8s.io/v1beta2", "resourceclaims", true, true),
    (api::resource::v1beta2::ResourceClaimTemplate, "resource.k8s.io/v1beta2", "resourceclaimtemplates", true, true),
    (api::resource::v1beta2::ResourceSlice, "resource.k8s.io/v1beta2", "resourceslices", false, true),
    (api::scheduling::v1::PriorityClass, "scheduling.k8s.io/v1", "priorityclasses", false, true),
    (api::scheduling::v1alpha3::CompositePodGroup, "scheduling.k8s.io/v1alpha3", "compositepodgroups", true, true),
    (api::scheduling::v1alpha3::PodGroup, "scheduling.k8s.io/v1alpha3", "podgroups", true, true),
    (api::scheduling::v1alpha3::Workload, "scheduling.k8s.io/v1alpha3", "workloads", true, true),
    (api::scheduling::v1beta1::PodGroup, "scheduling.k8s.io/v1beta1", "podgroups", true, true),
    (api::scheduling::v1beta1::Workload, "scheduling.k8s.io/v1beta1", "workloads", true, true),
    (api::storage::v1::CSIDriver, "storage.k8s.io/v1", "csidrivers", false, true),
    (api::storage::v1::CSINode, "storage.k8s.io/v1", "csinodes", false, true),
    (api::storage::v1::CSIStorageCapacity, "storage.k8s.io/v1", "csistoragecapacities", true, true),
    (api::storage::v1::StorageClass, "storage.k8s.io/v1", "storageclasses", false, true),
    (api::storage::v1::VolumeAttachment, "storage.k8s.io/v1", "volumeattachments", false, true),
    (api::storage::v1::VolumeAttributesClass, "storage.k8s.io/v1", "volumeattributesclasses", false, true),
    (api::storagemigration::v1::StorageVersionMigration, "storagemigration.k8s.io/v1", "storageversionmigrations", false, true),
    (api::storagemigration::v1beta1::StorageVersionMigration, "storagemigration.k8s.io/v1beta1", "storageversionmigrations", false, true),
    (apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition, "apiextensions.k8s.io/v1", "customresourcedefinitions", false, true),
    (kube_aggregator::pkg::apis::apiregistration::v1::APIService, "apiregistration.k8s.io/v1", "apiservices", false, true),
}

/// Looks a kind up by `apiVersion` and `kind`.
pub fn find(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version == api_version)
}

/// The API versions that know a kind of this name, for "did you mean apps/v1?" help.
pub fn versions_of(kind: &str) -> Vec<&'static str> {
    KINDS
        .iter()
        .filter(|k| k.kind == kind)
        .map(|k| k.api_version)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_kinds_are_known() {
        for (av, k) in [
            ("v1", "Pod"),
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            ("batch/v1", "CronJob"),
            ("networking.k8s.io/v1", "Ingress"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("berth.dev/v1", "GitSource"),
        ] {
            assert!(find(av, k).is_some(), "{av} {k}");
        }
        assert_eq!(
            find("apps/v1", "Deployment").unwrap().schema_file(),
            "deployment-apps-v1.json"
        );
        assert_eq!(find("v1", "Pod").unwrap().schema_file(), "pod-v1.json");
    }

    #[test]
    fn schema_files_are_unique() {
        let mut names: Vec<String> = KINDS.iter().map(KindInfo::schema_file).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}

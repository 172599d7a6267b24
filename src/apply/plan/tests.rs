//! The planner over a small fake server: no store, no HTTP, no clock.

use serde_json::{Value, json};

use super::*;

const NOW: &str = "2025-01-02T03:04:05Z";

/// Serves ConfigMaps, Namespaces and Secrets; admits a write by stamping a uid and the time,
/// and refuses a ConfigMap whose `data.valid` is `"no"`.
#[derive(Default)]
struct FakeServer {
    uids: usize,
}

impl Admission for FakeServer {
    type Error = String;

    fn kind(&self, api_version: &str, kind: &str) -> Option<Kind> {
        let (kind, namespaced) = match (api_version, kind) {
            ("v1", "ConfigMap") => ("ConfigMap", true),
            ("v1", "Secret") => ("Secret", true),
            ("v1", "Namespace") => ("Namespace", false),
            _ => return None,
        };
        Some(Kind {
            api_version: "v1",
            kind,
            namespaced,
        })
    }

    fn key(&self, kind: Kind, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{}/{name}", kind.kind, namespace.unwrap_or(""))
    }

    fn check_identity(
        &self,
        kind: Kind,
        namespace: &str,
        object: &mut Value,
    ) -> Result<(), String> {
        if kind.namespaced {
            object["metadata"]["namespace"] = json!(namespace);
        }
        Ok(())
    }

    fn create(
        &mut self,
        _: Kind,
        _: Option<&str>,
        mut object: Value,
        writer: &Writer<'_>,
        _: bool,
    ) -> Result<Value, String> {
        if object.pointer("/data/valid") == Some(&json!("no")) {
            return Err("data.valid: must not be no".into());
        }
        self.uids += 1;
        object["metadata"]["uid"] = json!(format!("uid-{}", self.uids));
        object["metadata"]["creationTimestamp"] = json!(writer.time);
        Ok(object)
    }

    fn update(
        &mut self,
        _: Kind,
        live: &Value,
        object: Value,
        _: Option<&Writer<'_>>,
    ) -> Result<Option<Value>, String> {
        Ok((object != *live).then_some(object))
    }

    fn causes(error: String) -> Vec<Cause> {
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: error,
            field: String::new(),
        }]
    }
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"valid": value}})
}

fn parent() -> ParentRef {
    ParentRef::secret("app", "shop")
}

fn shop_exists() -> Snapshot {
    let shop = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    Snapshot {
        namespaces: [("shop".to_string(), (shop, 1))].into(),
        ..Snapshot::default()
    }
}

fn run(
    batch: &BatchRequest,
    snapshot: Snapshot,
    server: &mut FakeServer,
) -> Result<Plan, PlanError<String>> {
    let desired = desired(&batch.objects, &parent(), server)?;
    plan(batch, desired, snapshot, &parent(), server, NOW)
}

/// What a store holds after committing `plan` over `snapshot`.
fn committed(plan: &Plan, mut snapshot: Snapshot) -> Snapshot {
    for step in &plan.steps {
        match &step.new {
            Some(new) => {
                snapshot.objects.insert(step.key.clone(), (new.clone(), 2));
            }
            None if step.outcome == Outcome::Pruned => {
                snapshot.objects.remove(&step.key);
            }
            None => {}
        }
    }
    if let Some(new) = &plan.parent.new {
        snapshot.parent = Some((new.clone(), 2));
    }
    snapshot
}

fn outcomes(plan: &Plan) -> Vec<(String, Outcome)> {
    plan.steps
        .iter()
        .map(|s| (s.name.clone(), s.outcome))
        .collect()
}

#[test]
fn a_first_apply_creates_everything_and_the_same_batch_again_changes_nothing() {
    let mut server = FakeServer::default();
    let batch = BatchRequest {
        objects: vec![config_map("a", "yes"), config_map("b", "yes")],
        prune: true,
        ..BatchRequest::default()
    };
    let first = run(&batch, shop_exists(), &mut server).unwrap();
    assert_eq!(
        outcomes(&first),
        [
            ("a".into(), Outcome::Created),
            ("b".into(), Outcome::Created)
        ]
    );
    assert_eq!(first.parent.outcome, Outcome::Created);
    assert!(first.writes());
    assert_eq!(first.needed_namespaces, ["shop".to_string()].into());
    let a = first.steps[0].new.as_ref().unwrap();
    assert_eq!(a["metadata"]["namespace"], "shop", "the parent's namespace");
    assert!(applyset::is_member(a, &parent().id()));
    assert_eq!(
        a["metadata"]["creationTimestamp"], NOW,
        "the time passed in"
    );
    assert_eq!(a["metadata"]["managedFields"][0]["manager"], FIELD_MANAGER);
    let parent_secret = first.parent.new.as_ref().unwrap();
    assert_eq!(
        parent_secret["metadata"]["annotations"][applyset::GROUP_KINDS_ANNOTATION],
        "ConfigMap"
    );

    let again = run(&batch, committed(&first, shop_exists()), &mut server).unwrap();
    assert_eq!(
        outcomes(&again),
        [
            ("a".into(), Outcome::Unchanged),
            ("b".into(), Outcome::Unchanged)
        ]
    );
    assert_eq!(again.parent.outcome, Outcome::Unchanged);
    assert!(!again.writes());
}

#[test]
fn a_prune_removes_members_no_longer_declared_and_the_guard_holds_mass_deletes() {
    let mut server = FakeServer::default();
    let all = BatchRequest {
        objects: ["a", "b", "c"].map(|n| config_map(n, "yes")).to_vec(),
        prune: true,
        ..BatchRequest::default()
    };
    let live = committed(
        &run(&all, shop_exists(), &mut server).unwrap(),
        shop_exists(),
    );

    let one_gone = BatchRequest {
        objects: all.objects[..2].to_vec(),
        ..all.clone()
    };
    let plan = run(&one_gone, live.clone(), &mut server).unwrap();
    assert_eq!(plan.steps.last().unwrap().outcome, Outcome::Pruned);
    assert_eq!(plan.steps.last().unwrap().name, "c");

    let two_gone = BatchRequest {
        objects: all.objects[..1].to_vec(),
        ..all.clone()
    };
    match run(&two_gone, live.clone(), &mut server) {
        Err(PlanError::MassDelete { refusal, would_go }) => {
            assert_eq!((refusal.would_delete, refusal.members), (2, 3));
            assert_eq!(would_go, ["configmap/b", "configmap/c"]);
        }
        other => panic!("expected the mass-delete guard, got {other:?}"),
    }
    let allowed = BatchRequest {
        allow_mass_delete: true,
        ..two_gone.clone()
    };
    assert_eq!(
        run(&allowed, live.clone(), &mut server)
            .unwrap()
            .steps
            .len(),
        3
    );

    // Without --prune the members stay, and stay listed by the parent.
    let kept = BatchRequest {
        prune: false,
        ..two_gone
    };
    let plan = run(&kept, live, &mut server).unwrap();
    assert_eq!(outcomes(&plan), [("a".into(), Outcome::Unchanged)]);
}

#[test]
fn a_namespace_is_never_pruned() {
    let mut server = FakeServer::default();
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "extra"}});
    let batch = BatchRequest {
        objects: vec![config_map("a", "yes"), config_map("b", "yes"), namespace],
        prune: true,
        ..BatchRequest::default()
    };
    let live = committed(
        &run(&batch, shop_exists(), &mut server).unwrap(),
        shop_exists(),
    );
    let without = BatchRequest {
        objects: batch.objects[..2].to_vec(),
        ..batch
    };
    assert!(matches!(
        run(&without, live, &mut server),
        Err(PlanError::PrunesNamespace { name }) if name == "extra"
    ));
}

#[test]
fn every_object_the_server_would_refuse_is_reported_at_once() {
    let mut server = FakeServer::default();
    let batch = BatchRequest {
        objects: vec![
            json!({"apiVersion": "v9", "kind": "Gadget", "metadata": {"name": "g"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
            config_map("twice", "yes"),
            config_map("twice", "yes"),
        ],
        ..BatchRequest::default()
    };
    match desired(&batch.objects, &parent(), &server) {
        Err(PlanError::Invalid { set, causes }) => {
            assert_eq!(set, "app");
            let reasons: Vec<&str> = causes.iter().map(|c| c.reason.as_str()).collect();
            assert_eq!(
                reasons,
                [
                    "FieldValueNotSupported",
                    "FieldValueRequired",
                    "FieldValueDuplicate"
                ]
            );
        }
        other => panic!("expected the objects refused, got {other:?}"),
    }

    let batch = BatchRequest {
        objects: vec![
            config_map("bad", "no"),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "lost", "namespace": "nowhere"}}),
        ],
        ..BatchRequest::default()
    };
    match run(&batch, shop_exists(), &mut server) {
        Err(PlanError::Invalid { causes, .. }) => {
            let messages: Vec<&str> = causes.iter().map(|c| c.message.as_str()).collect();
            assert_eq!(
                messages,
                [
                    "ConfigMap shop/bad: data.valid: must not be no",
                    "ConfigMap nowhere/lost: namespace nowhere does not exist (add a Namespace manifest or create it first)"
                ]
            );
        }
        other => panic!("expected the objects refused, got {other:?}"),
    }
}

#[test]
fn fields_another_manager_owns_conflict_unless_forced() {
    let mut server = FakeServer::default();
    let batch = BatchRequest {
        objects: vec![config_map("a", "yes")],
        ..BatchRequest::default()
    };
    let mut live = committed(
        &run(&batch, shop_exists(), &mut server).unwrap(),
        shop_exists(),
    );
    // Someone else applied data.valid=maybe since.
    let (object, _) = live.objects.values_mut().next().unwrap();
    object["data"]["valid"] = json!("maybe");
    object["metadata"]["managedFields"] = json!([{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": NOW,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:valid": {}}},
    }]);
    match run(&batch, live.clone(), &mut server) {
        Err(PlanError::Conflicts { causes, .. }) => {
            assert_eq!(causes.len(), 1);
            assert!(
                causes[0]
                    .message
                    .starts_with("ConfigMap shop/a: conflict with \"kubectl\""),
                "{causes:?}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = BatchRequest {
        force: true,
        ..batch
    };
    let plan = run(&forced, live, &mut server).unwrap();
    assert_eq!(outcomes(&plan), [("a".into(), Outcome::Configured)]);
    assert_eq!(plan.steps[0].new.as_ref().unwrap()["data"]["valid"], "yes");
}

#[test]
fn a_secret_that_is_not_a_berth_parent_is_not_taken_over() {
    let mut server = FakeServer::default();
    let foreign = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "app", "namespace": "shop"}});
    let snapshot = Snapshot {
        parent: Some((foreign, 1)),
        ..shop_exists()
    };
    let batch = BatchRequest {
        objects: vec![config_map("a", "yes")],
        ..BatchRequest::default()
    };
    let error = run(&batch, snapshot, &mut server).unwrap_err();
    assert!(matches!(error, PlanError::ForeignParent { .. }));
    assert_eq!(
        error.to_string(),
        "the Secret shop/app exists and is not the parent of a berth ApplySet (tooling \"\"); \
         choose another --applyset name"
    );
}

proptest::proptest! {
    /// Whatever members a set has and whichever names a batch then declares, the prune plans
    /// the deletion of exactly the members left out (or the guard names exactly them), and the
    /// batch planned again over its own result writes nothing.
    #[test]
    fn a_prune_deletes_exactly_the_members_left_out_and_a_second_plan_writes_nothing(
        members in proptest::collection::btree_set("[a-f]", 1..6),
        declared in proptest::collection::btree_set("[a-f]", 0..6),
        allow_mass_delete: bool,
    ) {
        let mut server = FakeServer::default();
        let set = |names: &std::collections::BTreeSet<String>| BatchRequest {
            objects: names.iter().map(|n| config_map(n, "yes")).collect(),
            prune: true,
            allow_mass_delete,
            ..BatchRequest::default()
        };
        let live = committed(&run(&set(&members), shop_exists(), &mut server).unwrap(), shop_exists());
        let gone: Vec<String> = members.difference(&declared).cloned().collect();
        let batch = set(&declared);
        match run(&batch, live.clone(), &mut server) {
            Ok(plan) => {
                let pruned: Vec<String> = plan
                    .steps
                    .iter()
                    .filter(|s| s.outcome == Outcome::Pruned)
                    .map(|s| s.name.clone())
                    .collect();
                proptest::prop_assert_eq!(&pruned, &gone);
                let again = run(&batch, committed(&plan, live), &mut server).unwrap();
                proptest::prop_assert!(!again.writes(), "{:?}", outcomes(&again));
            }
            Err(PlanError::MassDelete { would_go, .. }) => {
                proptest::prop_assert!(!allow_mass_delete);
                let named: Vec<String> = gone.iter().map(|n| format!("configmap/{n}")).collect();
                proptest::prop_assert_eq!(would_go, named);
            }
            Err(e) => proptest::prop_assert!(false, "{e:?}"),
        }
    }
}

#[test]
fn a_delta_touches_only_what_it_names_and_the_guard_counts_the_whole_set() {
    let mut server = FakeServer::default();
    let names: Vec<String> = (0..10).map(|i| format!("cm-{i}")).collect();
    let all = BatchRequest {
        objects: names.iter().map(|n| config_map(n, "yes")).collect(),
        prune: true,
        ..BatchRequest::default()
    };
    let live = committed(
        &run(&all, shop_exists(), &mut server).unwrap(),
        shop_exists(),
    );
    // The executor reads only the objects a delta names: cm-0 (changed) and cm-9 (removed).
    let named = |keys: &[&str]| Snapshot {
        objects: live
            .objects
            .iter()
            .filter(|(k, _)| keys.iter().any(|n| k.ends_with(&format!("/{n}"))))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..live.clone()
    };
    let kinds =
        vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": null}})];
    let delta = BatchRequest {
        objects: vec![config_map("cm-0", "changed")],
        delta: Some(crate::apply::batch::Delta {
            removed: vec![config_map("cm-9", "yes")],
            members_before: 10,
            member_kinds: kinds.clone(),
        }),
        ..all.clone()
    };
    let plan = run(&delta, named(&["cm-0", "cm-9"][..]), &mut server).unwrap();
    assert_eq!(
        outcomes(&plan),
        [
            ("cm-0".into(), Outcome::Configured),
            ("cm-9".into(), Outcome::Pruned)
        ],
        "the eight others are neither read, written nor pruned"
    );
    assert_eq!(plan.parent.outcome, Outcome::Unchanged, "same kinds");

    // Removing six of ten is held, though the snapshot holds only the six.
    let six: Vec<&str> = ["cm-1", "cm-2", "cm-3", "cm-4", "cm-5", "cm-6"].into();
    let mass = BatchRequest {
        objects: Vec::new(),
        delta: Some(crate::apply::batch::Delta {
            removed: six.iter().map(|n| config_map(n, "yes")).collect(),
            members_before: 10,
            member_kinds: kinds,
        }),
        ..all
    };
    match run(&mass, named(&six[..]), &mut server) {
        Err(PlanError::MassDelete { refusal, .. }) => {
            assert_eq!((refusal.would_delete, refusal.members), (6, 10));
        }
        other => panic!("expected the mass-delete guard, got {other:?}"),
    }
}

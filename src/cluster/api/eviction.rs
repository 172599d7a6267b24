//! `pods/eviction`: a pod deleted only as far as its PodDisruptionBudget allows, what
//! `kubectl drain` and `berth drain` use. The rules are Kubernetes':
//!
//! - A pod that no longer counts as available (Pending, Succeeded, Failed, or already being
//!   deleted), or whose namespace is being deleted, is deleted at once, no budget asked.
//! - A pod no budget selects is deleted; a pod two or more budgets select is refused (500, as
//!   in Kubernetes: which budget would pay is ambiguous).
//! - A pod that is not Ready is deleted without spending the budget when the budget is met
//!   without it (or its `unhealthyPodEvictionPolicy` is `AlwaysAllow`).
//! - Otherwise the budget pays: its `status.disruptionsAllowed` is decremented and the pod
//!   noted in `status.disruptedPods` with a compare-and-swap on the budget's resourceVersion,
//!   and then the pod is deleted. At 0, or while the disruption controller has not seen the
//!   budget's current generation, the answer is 429 TooManyRequests naming the budget. Two
//!   evictions racing for the last disruption both read 1; one swap succeeds, the other
//!   reads the budget again and finds 0.
//!
//! The pod is deleted with the Eviction's `deleteOptions` (grace period, preconditions). A pod
//! deleted without spending the budget is pinned to the resourceVersion read, so it cannot
//! become Ready in between and leave the budget uncounted.

use axum::http::{HeaderMap, StatusCode};
use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::body::{self, Params};
use super::delete::delete_with;
use super::handlers::{Outcome, load, name};
use super::resources::{Resource, by_kind};
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::storage::Written;
use super::{SharedState, Target, json_response};

/// How many times a write that lost a race (the budget or the pod changed since it was read)
/// is tried again.
const CONFLICT_RETRIES: usize = 8;

/// The condition a budget's status carries: whether an eviction may disrupt a pod now.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// Kubernetes' words for a refused eviction; berth adds the cause, so `kubectl drain`,
/// which prints only the message, names the budget.
const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// What an eviction does with its pod.
enum Verdict {
    /// Delete it without asking a budget; `pin` adds the pod's resourceVersion as a
    /// precondition.
    Delete { pin: bool },
    /// Take one disruption from this budget (read at `revision`), then delete the pod.
    Spend { budget: Value, revision: i64 },
}

/// `POST …/pods/NAME/eviction` with a `policy/v1` (or `v1beta1`) Eviction.
pub(super) async fn evict(
    state: SharedState,
    t: Target,
    mut params: Params,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Outcome {
    let eviction = body::decode(headers, bytes)?;
    if let Some(kind) = eviction.get("kind").and_then(Value::as_str)
        && kind != "Eviction"
    {
        return Err(ApiError::BadRequest(format!(
            "pods/eviction takes an Eviction, not a {kind}"
        )));
    }
    if let Some(n) = eviction.pointer("/metadata/name").and_then(Value::as_str)
        && n != name(&t)
    {
        return Err(ApiError::BadRequest(
            "name in URL does not match name in Eviction object".into(),
        ));
    }
    let options = match eviction.get("deleteOptions") {
        Some(o) if o.is_object() => o.clone(),
        _ => json!({}),
    };
    if options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        params.dry_run = true;
    }
    let caller_pinned = options.pointer("/preconditions/resourceVersion").is_some();
    let pod_target = Target { sub: None, ..t };
    let ns = pod_target.namespace.clone().unwrap_or_default();
    for _ in 0..CONFLICT_RETRIES {
        let (pod, revision) = load(&state, &pod_target).await?;
        let verdict = if counts_no_more(&pod) || namespace_terminating(&state, &ns).await? {
            Verdict::Delete {
                pin: !finished(&pod) && !is_deleting(&pod),
            }
        } else {
            let mut budgets = budgets_of(&state, &ns, &pod).await?;
            if budgets.len() > 1 {
                return Ok(json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "code": 500,
                        "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."}),
                ));
            }
            match budgets.pop() {
                None => Verdict::Delete { pin: false },
                Some((budget, budget_revision)) => {
                    if !is_ready(&pod) && unready_may_go(&budget) {
                        Verdict::Delete { pin: true }
                    } else {
                        Verdict::Spend {
                            budget,
                            revision: budget_revision,
                        }
                    }
                }
            }
        };
        let mut pod_options = options.clone();
        match verdict {
            Verdict::Delete { pin } => {
                let pin = pin && !caller_pinned;
                if pin {
                    pod_options["preconditions"]["resourceVersion"] = json!(revision.to_string());
                }
                match delete_with(
                    state.clone(),
                    pod_target.clone(),
                    params.clone(),
                    &pod_options,
                )
                .await
                {
                    Ok(_) => return Ok(success()),
                    // The pod changed under our pin: decide again on what it is now.
                    Err(ApiError::Conflict { .. }) if pin => continue,
                    Err(e) => return Err(e),
                }
            }
            Verdict::Spend { budget, revision } => {
                spend(
                    &state,
                    &ns,
                    budget,
                    revision,
                    name(&pod_target),
                    params.dry_run,
                )
                .await?;
                delete_with(state, pod_target, params, &pod_options).await?;
                return Ok(success());
            }
        }
    }
    Err(ApiError::stale(pod_target.resource, name(&pod_target)))
}

fn success() -> axum::response::Response {
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

fn pdb_resource() -> &'static Resource {
    by_kind("policy/v1", "PodDisruptionBudget").expect("PodDisruptionBudgets are served")
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finished(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn is_deleting(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// Whether the pod no longer counts towards any budget: it has not started (Pending), has
/// ended, or is already going.
fn counts_no_more(pod: &Value) -> bool {
    matches!(phase(pod), "Pending" | "Succeeded" | "Failed") || is_deleting(pod)
}

/// A pod's Ready condition is True: what a budget counts as healthy.
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

async fn namespace_terminating(state: &SharedState, ns: &str) -> Result<bool, ApiError> {
    let r = by_kind("v1", "Namespace").expect("namespaces are served");
    Ok(state
        .storage
        .get(r, None, ns)
        .await?
        .is_some_and(|(namespace, _)| is_deleting(&namespace)))
}

/// The budgets of the pod's namespace whose selector selects it, each with its revision.
async fn budgets_of(
    state: &SharedState,
    ns: &str,
    pod: &Value,
) -> Result<Vec<(Value, i64)>, ApiError> {
    let page = state
        .storage
        .list(pdb_resource(), Some(ns), 0, None, None)
        .await?;
    let mut out = Vec::new();
    for stored in &page.items {
        let budget = stored.decode()?;
        if LabelSelector::from_api(&budget["spec"]["selector"]).is_some_and(|s| s.matches(pod)) {
            out.push((budget, stored.mod_revision));
        }
    }
    Ok(out)
}

fn spec_of(budget: &Value) -> PodDisruptionBudgetSpec {
    serde_json::from_value(budget["spec"].clone()).unwrap_or_default()
}

fn status_of(budget: &Value) -> PodDisruptionBudgetStatus {
    serde_json::from_value(budget["status"].clone()).unwrap_or_default()
}

/// Whether a pod that is not Ready may go without spending the budget: it is not counted
/// as healthy, so the budget stays met if it is met now (or the budget says always).
fn unready_may_go(budget: &Value) -> bool {
    if spec_of(budget).unhealthy_pod_eviction_policy.as_deref() == Some("AlwaysAllow") {
        return true;
    }
    let status = status_of(budget);
    let desired = status.desired_healthy.unwrap_or(0);
    desired > 0 && status.current_healthy.unwrap_or(0) >= desired
}

/// Takes one disruption from the budget with a compare-and-swap, reading it again after a
/// lost race; a budget with none left refuses with 429.
async fn spend(
    state: &SharedState,
    ns: &str,
    mut budget: Value,
    mut revision: i64,
    pod: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let r = pdb_resource();
    let budget_name = budget["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for _ in 0..CONFLICT_RETRIES {
        let spent = take_disruption(&budget, pod, Timestamp::now())?;
        if dry_run {
            return Ok(());
        }
        match state
            .storage
            .update(r, Some(ns), &budget_name, &spent, revision)
            .await?
        {
            Written::Ok(_) => return Ok(()),
            Written::CompareFailed => {
                (budget, revision) = state
                    .storage
                    .get(r, Some(ns), &budget_name)
                    .await?
                    .ok_or_else(|| ApiError::not_found(r, &budget_name))?;
            }
        }
    }
    Err(ApiError::stale(r, &budget_name))
}

/// The budget with one disruption taken for `pod` (noted in `disruptedPods`, so the
/// disruption controller does not count the pod healthy before it sees it go), or the 429
/// that refuses the eviction.
fn take_disruption(budget: &Value, pod: &str, now: Timestamp) -> Result<Value, ApiError> {
    let budget_name = budget["metadata"]["name"].as_str().unwrap_or("");
    let generation = budget["metadata"]["generation"].as_i64().unwrap_or(0);
    let mut status = status_of(budget);
    if status.observed_generation.unwrap_or(0) < generation {
        return Err(refused(format!(
            "The disruption budget {budget_name} is still being processed by the server."
        )));
    }
    let allowed = status.disruptions_allowed.unwrap_or(0);
    if allowed <= 0 {
        return Err(refused(format!(
            "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
            status.desired_healthy.unwrap_or(0),
            status.current_healthy.unwrap_or(0)
        )));
    }
    status.disruptions_allowed = Some(allowed - 1);
    let time = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    status
        .disrupted_pods
        .get_or_insert_default()
        .insert(pod.to_string(), time.clone());
    if allowed == 1 {
        set_disruption_condition(&mut status, "InsufficientPods", "", time);
    }
    let mut spent = budget.clone();
    spent["status"] =
        serde_json::to_value(&status).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(spent)
}

fn refused(cause: String) -> ApiError {
    ApiError::DisruptionBudget {
        message: format!("{REFUSED} {cause}"),
        cause,
    }
}

/// Sets the budget's `DisruptionAllowed` condition: True (`SufficientPods`) while
/// `disruptionsAllowed` is above 0, else False with `reason` (`InsufficientPods`, or
/// `SyncFailed` with why, when the controller could not count); its transition time moves
/// only when its status does.
pub fn set_disruption_condition(
    status: &mut PodDisruptionBudgetStatus,
    reason: &str,
    message: &str,
    now: Time,
) {
    let allowed = status.disruptions_allowed.unwrap_or(0) > 0;
    let (state, reason, message) = if allowed {
        ("True", "SufficientPods", "")
    } else {
        ("False", reason, message)
    };
    let conditions = status.conditions.get_or_insert_default();
    let old = conditions
        .iter()
        .position(|c| c.type_ == DISRUPTION_ALLOWED);
    let transition = match old.map(|i| &conditions[i]) {
        Some(c) if c.status == state => c.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: state.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: transition,
        observed_generation: status.observed_generation,
    };
    match old {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(generation: i64, observed: i64, allowed: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": generation},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"observedGeneration": observed, "disruptionsAllowed": allowed,
                "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}})
    }

    #[test]
    fn a_disruption_is_taken_until_none_is_left() {
        let now = Timestamp::now();
        let spent = take_disruption(&budget(1, 1, 1), "web-a", now).unwrap();
        assert_eq!(spent["status"]["disruptionsAllowed"], 0);
        assert!(spent["status"]["disruptedPods"]["web-a"].is_string());
        let condition = &spent["status"]["conditions"][0];
        assert_eq!(
            (
                &condition["type"],
                &condition["status"],
                &condition["reason"]
            ),
            (
                &json!("DisruptionAllowed"),
                &json!("False"),
                &json!("InsufficientPods")
            )
        );
        let e = take_disruption(&spent, "web-b", now).unwrap_err();
        assert_eq!(e.code(), StatusCode::TOO_MANY_REQUESTS);
        assert!(e.to_string().starts_with(REFUSED), "{e}");
        assert!(e.to_string().contains("web needs 1 healthy pods and has 2"));
        let status = e.to_status();
        assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    }

    #[test]
    fn a_budget_the_controller_has_not_seen_yet_refuses() {
        let e = take_disruption(&budget(2, 1, 5), "web-a", Timestamp::now()).unwrap_err();
        assert!(e.to_string().contains("still being processed"), "{e}");
    }

    #[test]
    fn unready_pods_go_free_only_while_the_budget_is_met() {
        assert!(unready_may_go(&budget(1, 1, 1)));
        let mut short = budget(1, 1, 0);
        short["status"]["currentHealthy"] = json!(0);
        assert!(!unready_may_go(&short));
        short["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert!(unready_may_go(&short));
    }

    #[test]
    fn pending_finished_and_deleting_pods_count_no_more() {
        let pod = |phase: &str| json!({"status": {"phase": phase}});
        assert!(counts_no_more(&pod("Pending")) && counts_no_more(&pod("Failed")));
        assert!(!counts_no_more(&pod("Running")));
        let mut going = pod("Running");
        going["metadata"] = json!({"deletionTimestamp": "2026-01-01T00:00:00Z"});
        assert!(counts_no_more(&going));
    }
}

//! scheduling.k8s.io/v1: PriorityClasses, and kube's Priority admission
//! step that gives them their meaning (a pod's `priorityClassName` becomes
//! its `spec.priority`, which the scheduler's queue orders by).

use serde_json::{Value, json};
use skiff_store::Store;

use crate::admission::immutable;
use crate::registry::{BASE, Causes, Resource, Typed};
use crate::selectors::Filter;
use crate::status::{ApiError, ApiResult};
use crate::storage::{self, target};
use crate::tables::{created, s};

pub const PRIORITY_CLASSES: Resource = Resource {
    group: "scheduling.k8s.io",
    kind: "PriorityClass",
    plural: "priorityclasses",
    singular: "priorityclass",
    short_names: &["pc"],
    namespaced: false,
    has_spec: false,
    typed: Some(Typed::of::<k8s_openapi::api::scheduling::v1::PriorityClass>()),
    defaults: |obj, _| {
        if let Some(o) = obj.as_object_mut() {
            o.entry("preemptionPolicy")
                .or_insert_with(|| json!(PREEMPT_LOWER_PRIORITY));
        }
    },
    validate,
    validate_update: |old, new, causes| {
        if old.get("value") != new.get("value") {
            causes.push((
                "value".into(),
                "Forbidden: may not be changed in an update.".into(),
            ));
        }
        immutable(&["/preemptionPolicy"], old, new, causes);
    },
    builtin,
    deletable: |name| {
        if SYSTEM_CLASSES.iter().any(|(n, _, _)| *n == name) {
            Err("this is a system priority class and cannot be deleted")
        } else {
            Ok(())
        }
    },
    columns: &[
        ("Name", "string", 0),
        ("Value", "integer", 0),
        ("Global-Default", "boolean", 0),
        ("Age", "string", 0),
        ("PreemptionPolicy", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(value(o)),
            json!(global_default(o)),
            json!(created(o)),
            json!(preemption_policy(o)),
        ]
    },
    ..BASE
};

const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";
/// Above this only the system classes go.
const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;
const SYSTEM_PREFIX: &str = "system-";

/// kube's system classes: name, value, description.
const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

fn builtin() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": description,
                "preemptionPolicy": PREEMPT_LOWER_PRIORITY,
            })
        })
        .collect()
}

fn value(pc: &Value) -> i64 {
    pc.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn global_default(pc: &Value) -> bool {
    pc.get("globalDefault") == Some(&json!(true))
}

fn preemption_policy(pc: &Value) -> String {
    pc.get("preemptionPolicy")
        .and_then(Value::as_str)
        .unwrap_or(PREEMPT_LOWER_PRIORITY)
        .to_string()
}

/// kube's `ValidatePriorityClass`: `system-` names are the system classes
/// as they are; other classes stay at or below the highest user value.
fn validate(pc: &Value, causes: &mut Causes) {
    let name = s(pc.pointer("/metadata/name"));
    if name.starts_with(SYSTEM_PREFIX) {
        let why = match SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some((n, v, _)) if value(pc) != *v => {
                Some(format!("value of {n} PriorityClass must be {v}"))
            }
            Some((n, _, _)) if global_default(pc) => {
                Some(format!("globalDefault of {n} PriorityClass must be false"))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            causes.push((
                "metadata.name".into(),
                format!("Forbidden: priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}"),
            ));
        }
    } else if value(pc) > HIGHEST_USER_DEFINABLE {
        causes.push((
            "value".into(),
            format!("Forbidden: maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"),
        ));
    }
    if let Some(p) = pc.get("preemptionPolicy").and_then(Value::as_str)
        && !["Never", PREEMPT_LOWER_PRIORITY].contains(&p)
    {
        causes.push((
            "preemptionPolicy".into(),
            format!(
                "Unsupported value: {p:?}: supported values: \"Never\", \"PreemptLowerPriority\""
            ),
        ));
    }
}

/// kube's Priority admission plugin, for a write of a Pod or a
/// PriorityClass (other kinds pass): it holds the PriorityClasses as they
/// were read before the write, as the plugin's informer does.
pub(crate) struct Priority {
    classes: Vec<Value>,
}

impl Priority {
    pub(crate) async fn load(store: &Store, r: &Resource) -> ApiResult<Priority> {
        let concerned = *r == super::core::PODS || *r == PRIORITY_CLASSES;
        let classes = if concerned {
            storage::list(store, &PRIORITY_CLASSES, "", &Filter::default(), 0, None)
                .await?
                .items
        } else {
            Vec::new()
        };
        Ok(Priority { classes })
    }

    /// The default class: the global default with the lowest value, should
    /// a race have made two.
    fn default_class(&self) -> Option<&Value> {
        self.classes
            .iter()
            .filter(|c| global_default(c))
            .min_by_key(|c| value(c))
    }

    /// Runs before validation, on the object as written (`old` is the
    /// stored one on updates).
    pub(crate) fn admit(
        &self,
        r: &Resource,
        old: Option<&Value>,
        obj: &mut Value,
    ) -> ApiResult<()> {
        if *r == PRIORITY_CLASSES {
            return self.admit_class(obj, old.is_some());
        }
        if *r != super::core::PODS || !obj.get("spec").is_some_and(Value::is_object) {
            return Ok(());
        }
        let name = s(obj.pointer("/metadata/name"));
        let spec = &mut obj["spec"];
        if let Some(old) = old {
            // Set on create; an update that leaves them out keeps them (a
            // change is refused by the pod's update validation).
            for f in ["priority", "preemptionPolicy"] {
                if spec.get(f).is_none_or(Value::is_null)
                    && let Some(v) = old.pointer(&format!("/spec/{f}"))
                {
                    spec[f] = v.clone();
                }
            }
            return Ok(());
        }
        let forbidden = |why: String| {
            ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: {why}",
                target(r, &name).resource()
            ))
        };
        let class_name = s(spec.get("priorityClassName"));
        let (priority, policy) = if class_name.is_empty() {
            match self.default_class() {
                Some(c) => {
                    spec["priorityClassName"] = json!(s(c.pointer("/metadata/name")));
                    (value(c), preemption_policy(c))
                }
                None => (0, PREEMPT_LOWER_PRIORITY.to_string()),
            }
        } else {
            let c = self
                .classes
                .iter()
                .find(|c| s(c.pointer("/metadata/name")) == class_name)
                .ok_or_else(|| {
                    forbidden(format!("no PriorityClass with name {class_name} was found"))
                })?;
            (value(c), preemption_policy(c))
        };
        if let Some(p) = spec.get("priority").and_then(Value::as_i64)
            && p != priority
        {
            return Err(forbidden(format!(
                "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
        if let Some(p) = spec.get("preemptionPolicy").and_then(Value::as_str)
            && p != policy
        {
            return Err(forbidden(format!(
                "the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
        spec["priority"] = json!(priority);
        spec["preemptionPolicy"] = json!(policy);
        Ok(())
    }

    /// At most one class is the global default.
    fn admit_class(&self, pc: &Value, update: bool) -> ApiResult<()> {
        let name = s(pc.pointer("/metadata/name"));
        match self.default_class() {
            Some(d) if global_default(pc) => {
                let current = s(d.pointer("/metadata/name"));
                if !update || current != name {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: PriorityClass {current} is already marked as default. Only one default can exist",
                        target(&PRIORITY_CLASSES, &name).resource()
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, default: bool) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default, "preemptionPolicy": "Never"})
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn pods_get_the_priority_of_their_class() {
        let pods = crate::registry::find("", "v1", "pods").unwrap();
        let none = Priority { classes: vec![] };
        let mut p = pod(json!({}));
        none.admit(pods, None, &mut p).unwrap();
        assert_eq!(p["spec"]["priority"], 0);
        assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");

        let mut p = pod(json!({"priorityClassName": "gold"}));
        let e = none.admit(pods, None, &mut p).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: no PriorityClass with name gold was found"
        );

        let some = Priority {
            classes: vec![class("gold", 1000, false), class("base", 10, true)],
        };
        let mut p = pod(json!({"priorityClassName": "gold"}));
        some.admit(pods, None, &mut p).unwrap();
        assert_eq!(p["spec"]["priority"], 1000);
        assert_eq!(p["spec"]["preemptionPolicy"], "Never");
        let mut p = pod(json!({}));
        some.admit(pods, None, &mut p).unwrap();
        assert_eq!(
            (&p["spec"]["priorityClassName"], &p["spec"]["priority"]),
            (&json!("base"), &json!(10))
        );
        let mut p = pod(json!({"priorityClassName": "gold", "priority": 5}));
        assert!(
            some.admit(pods, None, &mut p)
                .unwrap_err()
                .message
                .contains("the integer value of priority (5) must not be provided")
        );

        // An update without the fields keeps them.
        let old = pod(json!({"priority": 1000, "preemptionPolicy": "Never"}));
        let mut p = pod(json!({}));
        some.admit(pods, Some(&old), &mut p).unwrap();
        assert_eq!(p["spec"], old["spec"]);
    }

    #[test]
    fn one_global_default_and_reserved_system_names() {
        let some = Priority {
            classes: vec![class("base", 10, true)],
        };
        let e = some
            .admit_class(&class("other", 5, true), false)
            .unwrap_err();
        assert_eq!(
            e.message,
            "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass base is already marked as default. Only one default can exist"
        );
        some.admit_class(&class("base", 10, true), true).unwrap();
        some.admit_class(&class("other", 5, false), false).unwrap();

        let causes = |pc: Value| {
            let mut c = Causes::new();
            validate(&pc, &mut c);
            c
        };
        assert!(causes(class("system-node-critical", 2_000_001_000, false)).is_empty());
        assert_eq!(
            causes(class("system-mine", 1, false))[0].1,
            "Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"
        );
        assert_eq!(causes(class("high", 1_000_000_001, false))[0].0, "value");
        assert_eq!(causes(class("high", 1_000_000_000, false)), vec![]);
    }
}

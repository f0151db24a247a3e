//! Kubernetes label selectors, one implementation for the API server (list
//! and watch `labelSelector`, aggregation rules), the scheduler and the
//! controllers: kube's text syntax ([`LabelSelector::parse`]) and
//! `metav1.LabelSelector` objects ([`LabelSelector::from_object`],
//! [`LabelSelector::from_typed`]) with kube's `LabelSelectorAsSelector`
//! validation: `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none,
//! and an unknown operator is an error, never "matches everything". The
//! empty selector matches everything; what a missing one means is the
//! caller's to say.

use std::collections::BTreeMap;

use serde_json::Value;

/// Why a selector is invalid (kube's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    /// kube's text syntax (`a=b,c!=d,e in (f,g),!h`), as list and watch
    /// requests send it.
    pub fn parse(s: &str) -> Result<LabelSelector, Error> {
        let bad = || {
            Error(format!(
                "unable to parse requirement: invalid label selector {s:?}"
            ))
        };
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set_values(v).ok_or_else(bad)?)
            } else if let Some((k, v)) = p.split_once(" in ") {
                Req::In(k.trim().into(), set_values(v).ok_or_else(bad)?)
            } else if p.contains(['(', ')', ' ', '<', '>']) {
                return Err(bad());
            } else {
                Req::Exists(p.to_string())
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// A `metav1.LabelSelector` object (matchLabels and matchExpressions,
    /// ANDed), as aggregation rules and workload selectors write it. An
    /// unknown operator or a malformed field is an error, never "everything".
    pub fn from_object(sel: &Value) -> Result<LabelSelector, Error> {
        let bad = |why: String| Error(format!("invalid label selector: {why}"));
        let obj = sel
            .as_object()
            .ok_or_else(|| bad("must be an object".into()))?;
        let mut reqs = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad(format!("matchLabels[{k:?}] must be a string")))?;
                    reqs.push(Req::Eq(k.clone(), v.to_string()));
                }
            }
            Some(_) => return Err(bad("matchLabels must be an object".into())),
        }
        let exprs = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => return Err(bad("matchExpressions must be a list".into())),
        };
        for e in exprs {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| bad("matchExpressions: key is required".into()))?
                .to_string();
            let values: Vec<String> = match e.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        bad(format!("matchExpressions[{key:?}]: values must be strings"))
                    })?,
                Some(_) => {
                    return Err(bad(format!(
                        "matchExpressions[{key:?}]: values must be a list"
                    )));
                }
            };
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            // kube's LabelSelectorAsSelector: In/NotIn need values,
            // Exists/DoesNotExist take none.
            reqs.push(match (op, values.is_empty()) {
                ("In", false) => Req::In(key, values),
                ("NotIn", false) => Req::NotIn(key, values),
                ("Exists", true) => Req::Exists(key),
                ("DoesNotExist", true) => Req::NotExists(key),
                _ => {
                    return Err(bad(format!(
                        "matchExpressions[{key:?}]: operator {op:?} with {} values",
                        values.len()
                    )));
                }
            });
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A typed `metav1.LabelSelector` (controllers, the scheduler), with
    /// the same validation as [`LabelSelector::from_object`].
    pub fn from_typed(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<LabelSelector, Error> {
        let v =
            serde_json::to_value(sel).map_err(|e| Error(format!("invalid label selector: {e}")))?;
        Self::from_object(&v)
    }

    /// Matches an object's `metadata.labels` (JSON).
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.matches_by(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Matches typed labels.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_by(|k| labels.get(k).map(String::as_str))
    }

    fn matches_by<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// kube's selector semantics, as a table: text and object forms agree.
    #[test]
    fn text_and_object_forms_match_as_kube() {
        let l = labels(&[("app", "web"), ("tier", "fe"), ("empty", "")]);
        for (text, object, want) in [
            ("", json!({}), true),
            ("app=web", json!({"matchLabels": {"app": "web"}}), true),
            ("app=db", json!({"matchLabels": {"app": "db"}}), false),
            (
                "app in (web,db)",
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}),
                true,
            ),
            (
                "app notin (web)",
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                "missing notin (x)",
                json!({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}),
                true,
            ),
            (
                "empty",
                json!({"matchExpressions": [{"key": "empty", "operator": "Exists"}]}),
                true,
            ),
            (
                "!missing",
                json!({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                "app=web,!tier",
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
            ),
        ] {
            let parsed = LabelSelector::parse(text).unwrap();
            let from_object = LabelSelector::from_object(&object).unwrap();
            let typed: meta::LabelSelector = serde_json::from_value(object.clone()).unwrap();
            let from_typed = LabelSelector::from_typed(&typed).unwrap();
            assert_eq!(parsed.matches_labels(&l), want, "{text}");
            assert_eq!(from_object.matches_labels(&l), want, "{object}");
            assert_eq!(from_typed, from_object, "{object}");
        }
    }

    /// An invalid selector is an error, never the empty one that matches
    /// everything (kube's LabelSelectorAsSelector).
    #[test]
    fn invalid_selectors_are_errors() {
        for bad in [
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchExpressions": [{"key": "", "operator": "Exists"}]}),
        ] {
            assert!(LabelSelector::from_object(&bad).is_err(), "{bad}");
            let typed: meta::LabelSelector = serde_json::from_value(bad.clone()).unwrap();
            assert!(LabelSelector::from_typed(&typed).is_err(), "{bad}");
        }
        for bad in ["app in web", "a b", "x>1"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }
}

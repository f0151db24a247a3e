//! Label and field selectors, with kube's syntax. Label selectors are
//! `skiff-selectors`' (one implementation with the scheduler and the
//! controllers); field selectors are the API server's own.

use serde_json::Value;

pub use skiff_selectors::LabelSelector;

use crate::status::ApiError;

impl From<skiff_selectors::Error> for ApiError {
    fn from(e: skiff_selectors::Error) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// A field selector: `path=value` / `path!=value` terms, ANDed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {s:?}"
                )));
            };
            terms.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields the selector names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(f, _, _)| f.as_str())
    }

    /// Fields are dotted JSON paths into the object (metadata.name,
    /// spec.nodeName, status.phase, ...); a missing field compares as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = cur.get(seg).unwrap_or(&Value::Null);
            }
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels
            .matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
            && self.fields.matches(obj)
    }
}

/// The invariants the `selectors` fuzz target (`tests/fuzz`) and the
/// bounded test below check over arbitrary selector text and objects.
#[doc(hidden)]
pub mod fuzz {
    use serde_json::{Value, json};

    use super::{FieldSelector, Filter, LabelSelector};

    /// The object selectors are matched against.
    pub fn object() -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns",
            "labels": {"app": "web", "tier": "fe", "example.com/x": "", "n": "1"}},
            "spec": {"nodeName": "n1", "replicas": 3}, "status": {"phase": "Running"}})
    }

    /// First byte: 0 label selector text, 1 field selector text, otherwise
    /// a `metav1.LabelSelector` as JSON. Parsing may refuse; nothing may
    /// panic, and a selector object that asks for something never turns
    /// into the empty selector that matches everything.
    pub fn one(doc: &Value, data: &[u8]) {
        let Some((&ctl, body)) = data.split_first() else {
            return;
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return;
        };
        match ctl % 3 {
            0 => {
                if let Ok(sel) = LabelSelector::parse(text) {
                    let f = Filter {
                        labels: sel.clone(),
                        ..Default::default()
                    };
                    let _ = f.matches(doc);
                    assert!(
                        !sel.is_empty() || text.split(',').all(|p| p.trim().is_empty()),
                        "{text:?} parsed to the empty selector"
                    );
                }
            }
            1 => {
                if let Ok(sel) = FieldSelector::parse(text) {
                    let _ = sel.matches(doc);
                }
            }
            _ => {
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    return;
                };
                if let Ok(sel) = LabelSelector::from_object(&v) {
                    let _ = sel.matches(doc.pointer("/metadata/labels").and_then(Value::as_object));
                    let asks = ["matchLabels", "matchExpressions"].iter().any(|k| {
                        v.get(*k).is_some_and(|x| {
                            x.as_object().is_some_and(|m| !m.is_empty())
                                || x.as_array().is_some_and(|a| !a.is_empty())
                        })
                    });
                    assert_eq!(sel.is_empty(), !asks, "{text}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        let m = |s: &str| {
            Filter {
                labels: LabelSelector::parse(s).unwrap(),
                ..Default::default()
            }
            .matches(&obj)
        };
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("tier in (fe, be)"));
        assert!(!m("tier notin (fe)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("app in (web),tier notin (x,y)"));
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn selector_objects_honour_expressions() {
        let labels = json!({"a": "1", "b": "x"});
        let labels = labels.as_object();
        let m = |sel: Value| LabelSelector::from_object(&sel).unwrap().matches(labels);
        assert!(m(json!({"matchLabels": {"a": "1"}})));
        assert!(!m(json!({"matchLabels": {"a": "2"}})));
        assert!(m(
            json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["x", "y"]}]})
        ));
        assert!(!m(
            json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]}]})
        ));
        assert!(!m(
            json!({"matchExpressions": [{"key": "c", "operator": "Exists"}]})
        ));
        assert!(m(
            json!({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]})
        ));
        // Both parts are ANDed.
        assert!(!m(
            json!({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "In", "values": ["z"]}]})
        ));
        // The empty selector is everything (kube), a malformed one an error.
        assert!(m(json!({})));
        for bad in [
            json!({"matchExpressions": [{"key": "b", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchExpressions": [{"key": "b", "operator": "In"}]}),
            json!({"matchExpressions": [{"key": "b", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchLabels": {"a": 1}}),
            json!("a=1"),
        ] {
            assert!(LabelSelector::from_object(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_paths() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
        assert!(m("metadata.name=p,metadata.namespace=ns"));
        assert!(m("spec.nodeName=n1"));
        assert!(m("status.phase!=Pending"));
        assert!(!m("spec.nodeName="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    /// Bounded fuzzing on stable over [`fuzz::one`] (`SKIFF_FUZZ_SECS`,
    /// `SKIFF_FUZZ_SEED` override): seeded mutations of selectors of every
    /// kind.
    #[test]
    fn fuzz_selectors_bounded() {
        let mut run = skiff_test_support::fuzz::Bounded::from_env(1.0, 0x5e1);
        let seeds: Vec<Vec<u8>> = [
            (0u8, "app=web,tier in (fe, be),!gone,example.com/x,n notin (2)"),
            (1, "metadata.name=p,spec.nodeName!=n2,status.phase==Running"),
            (2, r#"{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"In","values":["fe"]},{"key":"x","operator":"DoesNotExist"}]}"#),
        ]
        .iter()
        .map(|(k, p)| [&[*k][..], p.as_bytes()].concat())
        .collect();
        let doc = fuzz::object();
        while run.running() {
            let mut input = seeds[run.next_u64() as usize % seeds.len()].clone();
            for _ in 0..run.next_u64() % 6 {
                let len = input.len();
                let at = 1 + run.next_u64() as usize % len.max(1);
                match run.next_u64() % 4 {
                    0 if at < len => {
                        input[at] = b"(),=!{}[]\" ainotx:"[run.next_u64() as usize % 18]
                    }
                    1 => input.insert(at.min(len), b"(),=!{}[]\" "[run.next_u64() as usize % 11]),
                    2 if at < len => {
                        input.remove(at);
                    }
                    _ => input[0] = run.next_u64() as u8,
                }
            }
            fuzz::one(&doc, &input);
        }
        eprintln!("fuzz: {} selectors", run.runs());
        assert!(run.runs() > 100);
    }
}

//! Label selectors (pods) and node selector terms (nodes), matched as kube
//! matches them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// `metav1.LabelSelector` (`skiff-selectors`, kube's semantics): an empty
/// selector matches everything, an invalid one nothing (callers decide what
/// a missing one means).
pub fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    skiff_selectors::LabelSelector::from_typed(sel).is_ok_and(|s| s.matches_labels(labels))
}

/// Node selector terms are ORed; an empty list matches nothing (kube).
pub fn node_selector_terms_match(terms: &[NodeSelectorTerm], name: &str, labels: &Labels) -> bool {
    terms
        .iter()
        .any(|t| node_selector_term_matches(t, name, labels))
}

/// One term: its expressions and fields ANDed; a term with neither matches
/// nothing.
pub fn node_selector_term_matches(t: &NodeSelectorTerm, name: &str, labels: &Labels) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // The only field kube supports here.
            r.key == "metadata.name" && requirement_matches(r, Some(name))
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, got: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => got.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => got.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(got), [want]) = (got, values) else {
                return false;
            };
            match (got.parse::<i64>(), want.parse::<i64>()) {
                (Ok(g), Ok(w)) => {
                    if op == "Gt" {
                        g > w
                    } else {
                        g < w
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(&sel, &labels(&[("app", "web")])));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "db")])
        ));
        assert!(!selector_matches(&sel, &labels(&[("app", "api")])));
        assert!(selector_matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn node_terms() {
        let req = |key: &str, op: &str, v: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        let term = |exprs: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: Some(exprs),
            match_fields: None,
        };
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        assert!(node_selector_terms_match(
            &[term(vec![req("zone", "In", &["a", "b"])])],
            "n",
            &l
        ));
        assert!(!node_selector_terms_match(
            &[term(vec![req("zone", "In", &["b"])])],
            "n",
            &l
        ));
        assert!(node_selector_terms_match(
            &[
                term(vec![req("zone", "In", &["b"])]),
                term(vec![req("cores", "Gt", &["4"])])
            ],
            "n",
            &l
        ));
        assert!(!node_selector_terms_match(
            &[term(vec![req("cores", "Lt", &["4"])])],
            "n",
            &l
        ));
        assert!(node_selector_terms_match(
            &[term(vec![req("gpu", "DoesNotExist", &[])])],
            "n",
            &l
        ));
        assert!(
            !node_selector_terms_match(&[term(vec![])], "n", &l),
            "empty term matches nothing"
        );
        let by_name = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n"])]),
        };
        assert!(node_selector_terms_match(
            std::slice::from_ref(&by_name),
            "n",
            &l
        ));
        assert!(!node_selector_terms_match(&[by_name], "m", &l));
    }
}

//! The JSONPath subset kube's printer columns are written in (kubectl's
//! `-o jsonpath` syntax): `.a.b`, `['a.b']`, `[0]`, `[*]` and filters
//! `[?(@.type=="Ready")]`, as in `.status.conditions[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// Elements whose value at the relative path equals (or not) a literal.
    Filter(Vec<String>, bool, Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    /// Parses a path; the error says what is wrong where.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(t);
        if !t.starts_with('.') && !t.starts_with('[') {
            return Err("must start with '.' or '['".into());
        }
        let b = t.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'.' => {
                    let end = t[i + 1..].find(['.', '[']).map_or(t.len(), |e| e + i + 1);
                    let name = &t[i + 1..end];
                    if name.is_empty() {
                        return Err(format!("empty field name at {i}"));
                    }
                    steps.push(Step::Field(name.to_string()));
                    i = end;
                }
                b'[' => {
                    let close = bracket_end(t, i).ok_or_else(|| format!("unclosed '[' at {i}"))?;
                    steps.push(bracket(&t[i + 1..close])?);
                    i = close + 1;
                }
                c => return Err(format!("unexpected {:?} at {i}", c as char)),
            }
        }
        Ok(JsonPath(steps))
    }

    /// Every value the path reaches in `v`, in document order.
    pub fn eval<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in cur {
                match step {
                    Step::Field(f) => next.extend(v.get(f)),
                    Step::Index(n) => next.extend(v.get(*n)),
                    Step::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(o) => next.extend(o.values()),
                        _ => {}
                    },
                    Step::Filter(rel, eq, want) => {
                        for item in v.as_array().into_iter().flatten() {
                            let have = rel.iter().try_fold(item, |x, f| x.get(f));
                            if (have == Some(want)) == *eq {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }

    /// The JSON pointer of a path of fields and indexes only.
    pub fn pointer(&self) -> Option<String> {
        let mut out = String::new();
        for step in &self.0 {
            out.push('/');
            match step {
                Step::Field(f) => out.push_str(&f.replace('~', "~0").replace('/', "~1")),
                Step::Index(n) => out.push_str(&n.to_string()),
                _ => return None,
            }
        }
        Some(out)
    }
}

/// The `]` closing the `[` at `open`, skipping quoted text.
fn bracket_end(t: &str, open: usize) -> Option<usize> {
    let mut quote = None;
    for (i, c) in t[open + 1..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ']') => return Some(open + 1 + i),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
}

fn bracket(inner: &str) -> Result<Step, String> {
    let inner = inner.trim();
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Some(name) = unquote(inner) {
        return Ok(Step::Field(name.to_string()));
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Ok(Step::Index(n));
    }
    let filter = inner
        .strip_prefix("?(")
        .and_then(|f| f.strip_suffix(')'))
        .ok_or_else(|| format!("unsupported [{inner}]"))?;
    let (lhs, eq, rhs) = if let Some((l, r)) = filter.split_once("==") {
        (l, true, r)
    } else if let Some((l, r)) = filter.split_once("!=") {
        (l, false, r)
    } else {
        return Err(format!("unsupported filter {filter:?}: only == and !="));
    };
    let rel = lhs
        .trim()
        .strip_prefix("@.")
        .ok_or_else(|| format!("filter {filter:?} must compare @.<field>"))?;
    let want = match unquote(rhs) {
        Some(s) => Value::String(s.to_string()),
        None => serde_json::from_str(rhs.trim())
            .map_err(|_| format!("filter {filter:?}: {rhs:?} is not a literal"))?,
    };
    Ok(Step::Filter(
        rel.split('.').map(str::to_string).collect(),
        eq,
        want,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_kube_printer_columns_use() {
        let v = json!({"spec": {"replicas": 3, "a.b": 1}, "status": {"conditions": [
            {"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let eval = |p: &str| {
            JsonPath::parse(p)
                .unwrap()
                .eval(&v)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(eval(".spec.replicas"), [json!(3)]);
        assert_eq!(eval("{.spec['a.b']}"), [json!(1)]);
        assert_eq!(
            eval(".status.conditions[?(@.type==\"Ready\")].status"),
            [json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[*].type"),
            [json!("Synced"), json!("Ready")]
        );
        assert_eq!(eval(".status.conditions[1].type"), [json!("Ready")]);
        assert!(eval(".spec.missing").is_empty());
        assert_eq!(
            JsonPath::parse(".spec.replicas")
                .unwrap()
                .pointer()
                .as_deref(),
            Some("/spec/replicas")
        );
        assert!(JsonPath::parse("spec").is_err());
        assert!(JsonPath::parse(".a[?(@.x>1)]").is_err());
        assert!(JsonPath::parse(".a[").is_err());
    }
}

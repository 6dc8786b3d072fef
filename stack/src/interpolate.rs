//! Variable interpolation as Docker does it, on every string value of a file (keys are
//! left alone): `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}`
//! (unset), `${VAR:?error}` (unset or empty is an error), `${VAR?error}` (unset is an
//! error), `${VAR:+alt}` and `${VAR+alt}` (the Compose Specification's replacements), and
//! `$$` for a literal `$`. Defaults may themselves hold variables, as in docker compose.
//!
//! A value that interpolation changed is typed again where Docker's loader casts it (a
//! `replicas: ${N}` becomes the integer), so `stack config` prints it as a number.

use crate::document::{Node, Value};
use crate::error::Located;
use crate::path::KeyPath;
use std::collections::BTreeSet;

/// Defaults nested deeper than this are refused (the input is hostile or a mistake).
const MAX_NESTING: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateError {
    Invalid,
    TooDeep,
    Required { name: String, message: String },
}

impl TemplateError {
    pub fn message(&self, template: &str) -> String {
        let mut shown: String = template.chars().take(80).collect();
        if shown.len() < template.len() {
            shown.push('…');
        }
        let template = shown;
        match self {
            TemplateError::Invalid => format!(
                "invalid interpolation format in {template:?}: you may need to escape any $ with another $"
            ),
            TemplateError::TooDeep => {
                format!("variables nested more than {MAX_NESTING} deep in {template:?}")
            }
            TemplateError::Required { name, message } if message.is_empty() => {
                format!("required variable {name} is missing a value")
            }
            TemplateError::Required { name, message } => {
                format!("required variable {name} is missing a value: {message}")
            }
        }
    }
}

/// Substitutes the variables of one string. `lookup` gives a variable's value; the names
/// of variables used without a default and not set are added to `unset`.
pub(crate) fn substitute(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut BTreeSet<String>,
) -> Result<String, TemplateError> {
    substitute_at(template, lookup, unset, 0)
}

fn substitute_at(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut BTreeSet<String>,
    depth: usize,
) -> Result<String, TemplateError> {
    if depth > MAX_NESTING {
        return Err(TemplateError::TooDeep);
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner).ok_or(TemplateError::Invalid)?;
            out.push_str(&expand_braced(&inner[..end], lookup, unset, depth)?);
            rest = &inner[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(TemplateError::Invalid);
            }
            let name = &after[..len];
            out.push_str(&value_of(name, lookup, unset));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn value_of(
    name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut BTreeSet<String>,
) -> String {
    lookup(name).unwrap_or_else(|| {
        unset.insert(name.to_owned());
        String::new()
    })
}

/// The length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {}
        _ => return 0,
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

/// The index of the `}` closing a `${` whose body starts `s`, skipping nested `${...}`
/// and `$$`.
fn closing_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand_braced(
    body: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut BTreeSet<String>,
    depth: usize,
) -> Result<String, TemplateError> {
    let len = name_len(body);
    if len == 0 {
        return Err(TemplateError::Invalid);
    }
    let name = &body[..len];
    let op = &body[len..];
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let sub =
        |text: &str, unset: &mut BTreeSet<String>| substitute_at(text, lookup, unset, depth + 1);
    if op.is_empty() {
        return Ok(value_of(name, lookup, unset));
    }
    if let Some(default) = op.strip_prefix(":-") {
        return if set_nonempty {
            Ok(value.unwrap_or_default())
        } else {
            sub(default, unset)
        };
    }
    if let Some(message) = op.strip_prefix(":?") {
        return if set_nonempty {
            Ok(value.unwrap_or_default())
        } else {
            Err(TemplateError::Required {
                name: name.to_owned(),
                message: sub(message, unset)?,
            })
        };
    }
    if let Some(alt) = op.strip_prefix(":+") {
        return if set_nonempty {
            sub(alt, unset)
        } else {
            Ok(String::new())
        };
    }
    if let Some(default) = op.strip_prefix('-') {
        return match value {
            Some(v) => Ok(v),
            None => sub(default, unset),
        };
    }
    if let Some(message) = op.strip_prefix('?') {
        return match value {
            Some(v) => Ok(v),
            None => Err(TemplateError::Required {
                name: name.to_owned(),
                message: sub(message, unset)?,
            }),
        };
    }
    if let Some(alt) = op.strip_prefix('+') {
        return match value {
            Some(_) => sub(alt, unset),
            None => Ok(String::new()),
        };
    }
    Err(TemplateError::Invalid)
}

/// How an interpolated value is typed again.
#[derive(Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// Docker's table of the values its loader casts after interpolation.
const CASTS: &[(&[&str], Cast)] = &[
    (&["services", "*", "configs", "[]", "mode"], Cast::Int),
    (&["services", "*", "secrets", "[]", "mode"], Cast::Int),
    (&["services", "*", "healthcheck", "retries"], Cast::Int),
    (&["services", "*", "healthcheck", "disable"], Cast::Bool),
    (&["services", "*", "deploy", "replicas"], Cast::Int),
    (
        &["services", "*", "deploy", "update_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "update_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "rollback_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "rollback_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "restart_policy", "max_attempts"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "placement",
            "max_replicas_per_node",
        ],
        Cast::Int,
    ),
    (&["services", "*", "ports", "[]", "target"], Cast::Int),
    (&["services", "*", "ports", "[]", "published"], Cast::Int),
    (&["services", "*", "ulimits", "*"], Cast::Int),
    (&["services", "*", "ulimits", "*", "hard"], Cast::Int),
    (&["services", "*", "ulimits", "*", "soft"], Cast::Int),
    (&["services", "*", "privileged"], Cast::Bool),
    (&["services", "*", "oom_score_adj"], Cast::Int),
    (&["services", "*", "read_only"], Cast::Bool),
    (&["services", "*", "stdin_open"], Cast::Bool),
    (&["services", "*", "tty"], Cast::Bool),
    (&["services", "*", "init"], Cast::Bool),
    (&["services", "*", "volumes", "[]", "read_only"], Cast::Bool),
    (
        &["services", "*", "volumes", "[]", "volume", "nocopy"],
        Cast::Bool,
    ),
    (
        &["services", "*", "volumes", "[]", "tmpfs", "size"],
        Cast::Int,
    ),
    (&["networks", "*", "external"], Cast::Bool),
    (&["networks", "*", "internal"], Cast::Bool),
    (&["networks", "*", "attachable"], Cast::Bool),
    (&["volumes", "*", "external"], Cast::Bool),
    (&["secrets", "*", "external"], Cast::Bool),
    (&["configs", "*", "external"], Cast::Bool),
];

fn cast(path: &KeyPath, text: &str) -> Option<Value> {
    let (_, how) = CASTS.iter().find(|(pattern, _)| path.matches(pattern))?;
    match how {
        // Only plain decimal: `0440` stays text, for a file mode to read as octal.
        Cast::Int => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let canonical = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            canonical
                .then(|| text.parse::<i128>().ok())
                .flatten()
                .map(Value::Int)
        }
        Cast::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float),
        Cast::Bool => parse_bool(text).map(Value::Bool),
    }
}

/// YAML 1.1's booleans, as Docker's loader accepts them in interpolated values.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => Some(true),
        "n" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Interpolates every string value of a file's tree.
pub(crate) fn interpolate_tree(
    node: &mut Node,
    path: &KeyPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut BTreeSet<String>,
) -> Result<(), Located> {
    match &mut node.value {
        Value::Str(text) => {
            if !text.contains('$') {
                return Ok(());
            }
            let new = substitute(text, lookup, unset)
                .map_err(|e| Located::new(node.pos, path, e.message(text)))?;
            node.value = cast(path, &new).unwrap_or(Value::Str(new));
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &path.index(i), lookup, unset)?;
            }
        }
        Value::Map(entries) => {
            for e in entries {
                interpolate_tree(&mut e.value, &path.key(&e.key), lookup, unset)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(template: &str) -> Result<(String, BTreeSet<String>), TemplateError> {
        let env: BTreeMap<&str, &str> = [("SET", "value"), ("EMPTY", ""), ("N", "3")].into();
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        let mut unset = BTreeSet::new();
        substitute(template, &lookup, &mut unset).map(|s| (s, unset))
    }

    fn ok(template: &str) -> String {
        run(template).expect("substitutes").0
    }

    #[test]
    fn forms() {
        let cases = [
            ("plain", "plain"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("a${SET}b", "avalueb"),
            ("$SET-x", "value-x"),
            ("${UNSET:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${SET:-def}", "value"),
            ("${UNSET-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${SET?err}", "value"),
            ("${EMPTY?err}", ""),
            ("$$SET", "$SET"),
            ("$${SET}", "${SET}"),
            ("cost: 5$$", "cost: 5$"),
            ("${UNSET:-${SET}}", "value"),
            ("${UNSET:-${ALSO:-deep}}", "deep"),
            ("${UNSET:-a}b}", "ab}"),
            ("${UNSET:-}", ""),
            ("${UNSET:-with space}", "with space"),
            ("${UNSET:-$$}", "$"),
        ];
        for (template, want) in cases {
            assert_eq!(ok(template), want, "{template}");
        }
    }

    #[test]
    fn unset_variables_are_reported_once() {
        let (s, unset) = run("$UNSET ${UNSET} ${OTHER:-x}").expect("substitutes");
        assert_eq!(s, "  x");
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), ["UNSET"]);
    }

    #[test]
    fn errors() {
        for bad in [
            "$",
            "a $ b",
            "${",
            "${}",
            "${SET",
            "${1A}",
            "${SET:x}",
            "$1",
            "${SET SET}",
        ] {
            assert_eq!(run(bad), Err(TemplateError::Invalid), "{bad}");
        }
        assert_eq!(
            run("${UNSET:?is needed}"),
            Err(TemplateError::Required {
                name: "UNSET".into(),
                message: "is needed".into()
            })
        );
        assert_eq!(
            run("${EMPTY:?}").map_err(|e| e.message("${EMPTY:?}")),
            Err("required variable EMPTY is missing a value".into())
        );
        let deep = "${A:-".repeat(40) + &"}".repeat(40);
        assert_eq!(run(&deep), Err(TemplateError::TooDeep));
    }

    #[test]
    fn interpolated_values_are_cast_where_docker_casts() {
        let path = KeyPath::root()
            .key("services")
            .key("web")
            .key("deploy")
            .key("replicas");
        assert_eq!(cast(&path, "3"), Some(Value::Int(3)));
        assert_eq!(cast(&path, "three"), None);
        let mode = KeyPath::root()
            .key("services")
            .key("web")
            .key("secrets")
            .index(0)
            .key("mode");
        assert_eq!(cast(&mode, "0440"), None);
        let env = KeyPath::root()
            .key("services")
            .key("web")
            .key("environment")
            .key("N");
        assert_eq!(cast(&env, "3"), None);
    }
}

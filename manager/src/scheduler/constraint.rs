//! Placement constraints (`node.labels.zone==a`) and spread preferences
//! (`spread=node.labels.zone`): parsed once per task group, matched against nodes.
//!
//! The grammar follows swarmkit's `constraint` package: `KEY==VALUE` or `KEY!=VALUE`, with
//! whitespace around either side; keys are `node.id`, `node.hostname`, `node.ip`,
//! `node.role`, `node.platform.os`, `node.platform.arch` and `node.labels.<label>`. We refuse
//! what Swarm would silently never match (an unknown key, `engine.labels.*` which our workers
//! do not report), so `service create` can say so instead of leaving tasks pending forever.

use rswarm_proto::model::{Node, SpreadOver};
use std::fmt;
use std::net::IpAddr;

/// Why a constraint or a placement preference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("invalid constraint: the expression is empty")]
    Empty,
    #[error("invalid constraint `{expr}`: expected KEY==VALUE or KEY!=VALUE")]
    MissingOperator { expr: String },
    #[error("invalid constraint `{expr}`: `{key}` is not a valid key")]
    InvalidKey { expr: String, key: String },
    #[error(
        "invalid constraint `{expr}`: unknown key `{key}` (expected node.id, node.hostname, \
         node.ip, node.role, node.platform.os, node.platform.arch or node.labels.<name>)"
    )]
    UnknownKey { expr: String, key: String },
    #[error(
        "invalid constraint `{expr}`: `{key}` is not supported (nodes do not report engine \
         labels); use node.labels"
    )]
    Unsupported { expr: String, key: String },
    #[error("invalid constraint `{expr}`: `{value}` is not a valid value")]
    InvalidValue { expr: String, value: String },
    #[error("invalid constraint `{expr}`: `{value}` is not an IP address or CIDR block")]
    InvalidIp { expr: String, value: String },
    #[error("invalid placement preference `{descriptor}`: expected spread=node.labels.<name>")]
    InvalidPreference { descriptor: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    Eq,
    Ne,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
        }
    }
}

/// What a constraint looks at on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConstraintKey {
    NodeId,
    Hostname,
    /// The address the node's session reported; the value is an IP or a CIDR block.
    Ip,
    Role,
    Os,
    Arch,
    /// A label the user set on the node (`node update --label-add`).
    Label(String),
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::Hostname => f.write_str("node.hostname"),
            ConstraintKey::Ip => f.write_str("node.ip"),
            ConstraintKey::Role => f.write_str("node.role"),
            ConstraintKey::Os => f.write_str("node.platform.os"),
            ConstraintKey::Arch => f.write_str("node.platform.arch"),
            ConstraintKey::Label(l) => write!(f, "node.labels.{l}"),
        }
    }
}

/// A parsed `KEY==VALUE` / `KEY!=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: ConstraintKey,
    pub op: Operator,
    /// Trimmed of surrounding whitespace.
    pub value: String,
    /// For `node.ip`: the address or block the value names, parsed once here.
    ip: Option<(IpAddr, u8)>,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op.as_str(), self.value)
    }
}

const LABEL_PREFIX: &str = "node.labels.";
const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// Parses every expression, or returns the first one that is wrong.
pub fn parse_constraints(exprs: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
    exprs.iter().map(|e| parse_constraint(e)).collect()
}

pub fn parse_constraint(expr: &str) -> Result<Constraint, ConstraintError> {
    if expr.trim().is_empty() {
        return Err(ConstraintError::Empty);
    }
    // The first operator in the text splits it, whichever it is, so `a==b!=c` is refused as a
    // bad value rather than read as `a==b` or `a==b!` depending on the search order.
    let (pos, op) = match (expr.find("=="), expr.find("!=")) {
        (Some(e), Some(n)) if n < e => (n, Operator::Ne),
        (Some(e), _) => (e, Operator::Eq),
        (None, Some(n)) => (n, Operator::Ne),
        (None, None) => {
            return Err(ConstraintError::MissingOperator {
                expr: expr.to_owned(),
            })
        }
    };
    let raw_key = expr[..pos].trim();
    let value = expr[pos + 2..].trim();
    if !valid_key(raw_key) {
        return Err(ConstraintError::InvalidKey {
            expr: expr.to_owned(),
            key: raw_key.to_owned(),
        });
    }
    if !valid_value(value) {
        return Err(ConstraintError::InvalidValue {
            expr: expr.to_owned(),
            value: value.to_owned(),
        });
    }
    // Key names are case-insensitive as in Swarm; a label's own name keeps its case, because
    // node labels are an exact-match map.
    let lower = raw_key.to_ascii_lowercase();
    let key = match lower.as_str() {
        "node.id" => ConstraintKey::NodeId,
        "node.hostname" => ConstraintKey::Hostname,
        "node.ip" => ConstraintKey::Ip,
        "node.role" => ConstraintKey::Role,
        "node.platform.os" => ConstraintKey::Os,
        "node.platform.arch" => ConstraintKey::Arch,
        l if l.starts_with(LABEL_PREFIX) && l.len() > LABEL_PREFIX.len() => {
            ConstraintKey::Label(raw_key[LABEL_PREFIX.len()..].to_owned())
        }
        l if l.starts_with(ENGINE_LABEL_PREFIX) => {
            return Err(ConstraintError::Unsupported {
                expr: expr.to_owned(),
                key: raw_key.to_owned(),
            })
        }
        _ => {
            return Err(ConstraintError::UnknownKey {
                expr: expr.to_owned(),
                key: raw_key.to_owned(),
            })
        }
    };
    let ip = if key == ConstraintKey::Ip {
        Some(parse_cidr(value).ok_or_else(|| ConstraintError::InvalidIp {
            expr: expr.to_owned(),
            value: value.to_owned(),
        })?)
    } else {
        None
    };
    Ok(Constraint {
        key,
        op,
        value: value.to_owned(),
        ip,
    })
}

/// Swarm's key pattern: a letter or `_`, then letters, digits, `-`, `_` or `.`.
fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && k.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Swarm's value pattern: letters, digits, whitespace and `:-_.*()?+[]\^$|/`. Anything else
/// (`=`, `,`, quotes) is more likely a typo than a label value.
fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c.is_ascii_whitespace()
                || matches!(
                    c,
                    ':' | '-'
                        | '_'
                        | '.'
                        | '*'
                        | '('
                        | ')'
                        | '?'
                        | '+'
                        | '['
                        | ']'
                        | '\\'
                        | '^'
                        | '$'
                        | '|'
                        | '/'
                )
        })
}

/// `10.0.0.1` (a single address) or `10.0.0.0/8`.
fn parse_cidr(v: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match v.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
        None => (v.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((addr, bits))
}

fn in_cidr(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Constraint {
    /// Whether `node` satisfies the constraint. Role, OS, architecture and hostname compare
    /// case-insensitively (as Swarm's `EqualFold`), IDs and label values exactly. A missing
    /// label fails `==` and passes `!=`, as in Swarm.
    pub fn matches(&self, node: &Node) -> bool {
        let equal = match &self.key {
            ConstraintKey::NodeId => node.id.as_str() == self.value,
            ConstraintKey::Hostname => node.description.hostname.eq_ignore_ascii_case(&self.value),
            ConstraintKey::Role => node.role.as_str().eq_ignore_ascii_case(&self.value),
            ConstraintKey::Os => node.description.os.eq_ignore_ascii_case(&self.value),
            ConstraintKey::Arch => node.description.arch.eq_ignore_ascii_case(&self.value),
            ConstraintKey::Label(l) => match node.spec.labels.get(l) {
                Some(v) => *v == self.value,
                None => return self.op == Operator::Ne,
            },
            ConstraintKey::Ip => {
                // A node that has not reported a usable address matches neither way: we
                // cannot tell which side of the constraint it is on.
                let Ok(addr) = node.status.addr.parse::<IpAddr>() else {
                    return false;
                };
                match self.ip {
                    Some(net) => in_cidr(addr, net),
                    None => false,
                }
            }
        };
        equal == (self.op == Operator::Eq)
    }
}

/// Whether `node` satisfies every constraint.
pub fn matches_all(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

/// A parsed `spread=node.labels.<name>` preference: the label whose values tasks spread over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    pub label: String,
}

impl Spread {
    /// The node's value for the label; nodes without it form one group of their own.
    pub fn value<'a>(&self, node: &'a Node) -> Option<&'a str> {
        node.spec.labels.get(&self.label).map(String::as_str)
    }
}

/// Parses placement preferences. The descriptor may be given with or without the `spread=`
/// the CLI flag carries.
pub fn parse_preferences(prefs: &[SpreadOver]) -> Result<Vec<Spread>, ConstraintError> {
    prefs
        .iter()
        .map(|p| {
            let d = p.descriptor.trim();
            let d = d.strip_prefix("spread=").unwrap_or(d).trim();
            let bad = || ConstraintError::InvalidPreference {
                descriptor: p.descriptor.clone(),
            };
            if d.len() <= LABEL_PREFIX.len()
                || !d[..LABEL_PREFIX.len()].eq_ignore_ascii_case(LABEL_PREFIX)
                || !valid_key(d)
            {
                return Err(bad());
            }
            Ok(Spread {
                label: d[LABEL_PREFIX.len()..].to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{NodeRole, NodeState};

    fn node() -> Node {
        let mut n = Node {
            id: "n1abc".into(),
            role: NodeRole::Worker,
            ..Default::default()
        };
        n.description.hostname = "Host-1".into();
        n.description.os = "linux".into();
        n.description.arch = "x86_64".into();
        n.status.state = NodeState::Ready;
        n.status.addr = "10.1.2.3".into();
        n.spec.labels.insert("zone".into(), "eu-1".into());
        n.spec.labels.insert("Disk".into(), "SSD".into());
        n
    }

    #[test]
    fn parses_valid_expressions() {
        let cases: &[(&str, ConstraintKey, Operator, &str)] = &[
            (
                "node.role==worker",
                ConstraintKey::Role,
                Operator::Eq,
                "worker",
            ),
            (
                "  node.role  !=  manager ",
                ConstraintKey::Role,
                Operator::Ne,
                "manager",
            ),
            (
                "NODE.ROLE==worker",
                ConstraintKey::Role,
                Operator::Eq,
                "worker",
            ),
            (
                "node.id==abc123",
                ConstraintKey::NodeId,
                Operator::Eq,
                "abc123",
            ),
            (
                "node.hostname!=h1",
                ConstraintKey::Hostname,
                Operator::Ne,
                "h1",
            ),
            (
                "node.platform.os==linux",
                ConstraintKey::Os,
                Operator::Eq,
                "linux",
            ),
            (
                "node.platform.arch==x86_64",
                ConstraintKey::Arch,
                Operator::Eq,
                "x86_64",
            ),
            (
                "node.labels.zone==eu-1",
                ConstraintKey::Label("zone".into()),
                Operator::Eq,
                "eu-1",
            ),
            (
                "node.labels.Disk!=SSD",
                ConstraintKey::Label("Disk".into()),
                Operator::Ne,
                "SSD",
            ),
            (
                "node.ip==10.0.0.0/8",
                ConstraintKey::Ip,
                Operator::Eq,
                "10.0.0.0/8",
            ),
            (
                "node.ip!=fe80::1",
                ConstraintKey::Ip,
                Operator::Ne,
                "fe80::1",
            ),
            (
                "node.labels.path==/data/a b",
                ConstraintKey::Label("path".into()),
                Operator::Eq,
                "/data/a b",
            ),
        ];
        for (expr, key, op, value) in cases {
            let c = parse_constraint(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(
                (&c.key, c.op, c.value.as_str()),
                (key, *op, *value),
                "{expr}"
            );
        }
        let all = parse_constraints(&["node.role==worker".into(), "node.labels.a!=b".into()]);
        assert_eq!(all.map(|v| v.len()), Ok(2));
        assert_eq!(
            parse_constraint("node.labels.zone == a").map(|c| c.to_string()),
            Ok("node.labels.zone==a".to_owned())
        );
    }

    #[test]
    fn refuses_bad_expressions_clearly() {
        let cases: &[(&str, &str)] = &[
            ("", "the expression is empty"),
            ("   ", "the expression is empty"),
            ("node.role=worker", "expected KEY==VALUE or KEY!=VALUE"),
            ("node.role", "expected KEY==VALUE or KEY!=VALUE"),
            ("==worker", "`` is not a valid key"),
            ("node role==worker", "`node role` is not a valid key"),
            ("1node.role==worker", "`1node.role` is not a valid key"),
            ("node.role==", "`` is not a valid value"),
            ("node.role==a=b", "`a=b` is not a valid value"),
            ("node.role==worker!=x", "`worker!=x` is not a valid value"),
            ("node.labels.zone==\"a\"", "is not a valid value"),
            ("node.labels.==a", "unknown key `node.labels.`"),
            ("node.foo==bar", "unknown key `node.foo`"),
            ("engine.labels.os==linux", "not supported"),
            ("node.ip==10.0.0.300", "not an IP address or CIDR block"),
            ("node.ip==10.0.0.0/33", "not an IP address or CIDR block"),
        ];
        for (expr, want) in cases {
            let err = parse_constraint(expr).expect_err(expr).to_string();
            assert!(err.contains(want), "{expr}: got `{err}`, want `{want}`");
        }
        let err = parse_constraints(&["node.role==worker".into(), "bogus".into()]);
        assert!(matches!(err, Err(ConstraintError::MissingOperator { .. })));
    }

    #[test]
    fn matches_nodes_like_swarm() {
        let n = node();
        let cases: &[(&str, bool)] = &[
            ("node.id==n1abc", true),
            ("node.id==N1ABC", false),
            ("node.id!=other", true),
            ("node.hostname==host-1", true),
            ("node.hostname!=HOST-1", false),
            ("node.role==worker", true),
            ("node.role==WORKER", true),
            ("node.role==manager", false),
            ("node.role!=manager", true),
            ("node.platform.os==Linux", true),
            ("node.platform.arch==X86_64", true),
            ("node.platform.arch!=x86_64", false),
            ("node.labels.zone==eu-1", true),
            ("node.labels.zone==EU-1", false),
            ("node.labels.zone!=eu-2", true),
            ("node.labels.disk==SSD", false),
            ("node.labels.Disk==SSD", true),
            ("node.labels.missing==x", false),
            ("node.labels.missing!=x", true),
            ("node.ip==10.1.2.3", true),
            ("node.ip==10.1.0.0/16", true),
            ("node.ip==10.2.0.0/16", false),
            ("node.ip!=10.2.0.0/16", true),
            ("node.ip==0.0.0.0/0", true),
            ("node.ip==::/0", false),
        ];
        for (expr, want) in cases {
            let c = parse_constraint(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(c.matches(&n), *want, "{expr}");
        }
        let mut no_addr = node();
        no_addr.status.addr.clear();
        for expr in ["node.ip==10.1.2.3", "node.ip!=10.1.2.3"] {
            assert!(
                !parse_constraint(expr).is_ok_and(|c| c.matches(&no_addr)),
                "{expr}"
            );
        }
    }

    #[test]
    fn parses_preferences() {
        let pref = |d: &str| SpreadOver {
            descriptor: d.into(),
        };
        assert_eq!(
            parse_preferences(&[pref("node.labels.zone"), pref("spread=node.labels.rack")]),
            Ok(vec![
                Spread {
                    label: "zone".into()
                },
                Spread {
                    label: "rack".into()
                }
            ])
        );
        for bad in [
            "node.labels.",
            "engine.labels.zone",
            "zone",
            "spread=",
            "node.hostname",
        ] {
            let err = parse_preferences(&[pref(bad)]).expect_err(bad);
            assert!(
                err.to_string()
                    .contains("expected spread=node.labels.<name>"),
                "{bad}"
            );
        }
    }
}

//! Several Compose files merged in order, by the Compose Specification's rules
//! (<https://docs.docker.com/reference/compose-file/merge/>), on the trees so that every
//! value keeps the place it was written:
//!
//! - mappings merge key by key, recursively; a later scalar replaces an earlier one;
//! - sequences are appended (an item already there is not repeated);
//! - `command`, `entrypoint` and `healthcheck.test` are replaced, not appended;
//! - `ports`, `volumes`, `secrets` and `configs` are unique by a key ({ip, target,
//!   published, protocol}; target; target, else source): an item with the key of an
//!   earlier one is merged into it, others are appended;
//! - `environment`, `labels`, `deploy.labels`, `extra_hosts`, `sysctls` and the like may be
//!   a list or a mapping in either file: they merge by variable name;
//! - a service's `networks` may be a list or a mapping: they merge by network name;
//! - `dns`, `dns_search`, `env_file` and `tmpfs` may be a string or a list: appended;
//! - `logging` is replaced when the driver differs;
//! - a null in a later file leaves the earlier value;
//! - `!reset` on a value in a later file removes the key, `!override` replaces the earlier
//!   value instead of merging into it.

use crate::document::{Entry, MergeTag, Node, Value};
use crate::path::KeyPath;
use crate::syntax::{parse_port, parse_volume};

/// Merges `over` into `base`.
pub(crate) fn merge(base: Node, over: Node) -> Node {
    merge_at(base, over, &KeyPath::root())
}

fn merge_at(base: Node, over: Node, path: &KeyPath) -> Node {
    if matches!(over.value, Value::Null) {
        return base;
    }
    let in_service = |rest: &[&str]| {
        let mut pattern = vec!["services", "*"];
        pattern.extend_from_slice(rest);
        path.matches(&pattern)
    };
    if in_service(&["command"])
        || in_service(&["entrypoint"])
        || in_service(&["healthcheck", "test"])
    {
        return over;
    }
    if in_service(&["ports"]) {
        return merge_unique(base, over, port_key);
    }
    if in_service(&["volumes"]) {
        return merge_unique(base, over, volume_key);
    }
    if in_service(&["secrets"]) || in_service(&["configs"]) {
        return merge_unique(base, over, file_ref_key);
    }
    let list_or_dict = in_service(&["environment"])
        || in_service(&["labels"])
        || in_service(&["deploy", "labels"])
        || in_service(&["sysctls"])
        || in_service(&["build", "args"])
        || in_service(&["build", "labels"])
        || in_service(&["logging", "options"])
        || ["networks", "volumes", "secrets", "configs"]
            .iter()
            .any(|top| path.matches(&[top, "*", "labels"]));
    if list_or_dict {
        return merge_list_or_dict(base, over, &['=']);
    }
    if in_service(&["extra_hosts"]) {
        return merge_list_or_dict(base, over, &['=', ':']);
    }
    if in_service(&["networks"]) {
        return merge_service_networks(base, over, path);
    }
    if in_service(&["dns"])
        || in_service(&["dns_search"])
        || in_service(&["env_file"])
        || in_service(&["tmpfs"])
    {
        let (pos, items) = into_list(base);
        return append_unique(pos, items, into_list(over).1);
    }
    if in_service(&["logging"]) {
        let driver = |n: &Node| n.get("driver").and_then(Node::scalar_text);
        if let (Some(a), Some(b)) = (driver(&base), driver(&over)) {
            if a != b {
                return over;
            }
        }
    }
    match (base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => Node::new(base.pos, Value::Map(merge_maps(b, o, path))),
        (Value::Seq(b), Value::Seq(o)) => append_unique(base.pos, b, o),
        (_, value) => Node::new(over.pos, value),
    }
}

fn merge_maps(base: Vec<Entry>, over: Vec<Entry>, path: &KeyPath) -> Vec<Entry> {
    let mut out = base;
    for o in over {
        let at = out.iter().position(|b| b.key == o.key);
        match (at, o.value.tag) {
            (Some(i), MergeTag::Reset) => {
                out.remove(i);
            }
            (None, MergeTag::Reset) => {}
            (Some(i), MergeTag::Override) => out[i] = o,
            (Some(i), MergeTag::None) => {
                let p = path.key(&o.key);
                let b = out[i].value.clone();
                out[i].value = merge_at(b, o.value, &p);
            }
            (None, _) => out.push(o),
        }
    }
    out
}

/// The items of a list; a string is a one-item list.
fn into_list(node: Node) -> (crate::document::Pos, Vec<Node>) {
    match node.value {
        Value::Seq(items) => (node.pos, items),
        _ => (node.pos, vec![node]),
    }
}

fn append_unique(pos: crate::document::Pos, mut items: Vec<Node>, more: Vec<Node>) -> Node {
    for m in more {
        if !items.iter().any(|i| i.same_value(&m)) {
            items.push(m);
        }
    }
    Node::new(pos, Value::Seq(items))
}

/// Sequences whose items are unique by a key: an item of `over` with the key of an item
/// of `base` is merged into it (both mappings) or replaces it.
fn merge_unique(base: Node, over: Node, key: fn(&Node) -> String) -> Node {
    let (Value::Seq(mut items), Value::Seq(more)) = (base.value.clone(), over.value.clone()) else {
        return over;
    };
    for m in more {
        let k = key(&m);
        match items.iter().position(|i| key(i) == k) {
            Some(i) => {
                let b = items[i].clone();
                items[i] = match (&b.value, &m.value) {
                    (Value::Map(_), Value::Map(_)) => merge_at(b, m, &KeyPath::root()),
                    _ => m,
                };
            }
            None => items.push(m),
        }
    }
    Node::new(base.pos, Value::Seq(items))
}

fn text(n: Option<&Node>) -> String {
    n.and_then(Node::scalar_text).unwrap_or_default()
}

/// {ip, target, published, protocol}.
fn port_key(n: &Node) -> String {
    match &n.value {
        Value::Map(_) => format!(
            "|{}|{}|{}",
            text(n.get("target")),
            text(n.get("published")),
            n.get("protocol")
                .and_then(Node::scalar_text)
                .unwrap_or_else(|| "tcp".to_owned())
        ),
        _ => {
            let spec = n.scalar_text().unwrap_or_default();
            match parse_port(&spec) {
                Ok(p) if p.mappings.len() == 1 => {
                    let (published, target) = p.mappings[0];
                    format!(
                        "{}|{target}|{}|{}",
                        p.host_ip.unwrap_or_default(),
                        published.map(|p| p.to_string()).unwrap_or_default(),
                        p.protocol.as_str()
                    )
                }
                _ => format!("raw:{spec}"),
            }
        }
    }
}

fn volume_key(n: &Node) -> String {
    match &n.value {
        Value::Map(_) => text(n.get("target")),
        _ => {
            let spec = n.scalar_text().unwrap_or_default();
            parse_volume(&spec)
                .map(|v| v.target)
                .unwrap_or_else(|_| format!("raw:{spec}"))
        }
    }
}

fn file_ref_key(n: &Node) -> String {
    match &n.value {
        Value::Map(_) => n
            .get("target")
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| text(n.get("source"))),
        _ => n.scalar_text().unwrap_or_default(),
    }
}

/// One `KEY=VALUE` of a list, or one entry of a mapping.
struct Pair {
    key: String,
    key_node: Node,
    value: Option<Node>,
}

fn pairs(node: &Node, separators: &[char]) -> Option<Vec<Pair>> {
    match &node.value {
        Value::Map(entries) => Some(
            entries
                .iter()
                .map(|e| Pair {
                    key: e.key.clone(),
                    key_node: Node::str(e.key_pos, e.key.clone()),
                    value: Some(e.value.clone()),
                })
                .collect(),
        ),
        Value::Seq(items) => items
            .iter()
            .map(|item| {
                let text = item.scalar_text()?;
                Some(match text.split_once(separators) {
                    Some((k, v)) => Pair {
                        key: k.to_owned(),
                        key_node: item.clone(),
                        value: Some(Node::str(item.pos, v)),
                    },
                    None => Pair {
                        key: text,
                        key_node: item.clone(),
                        value: None,
                    },
                })
            })
            .collect(),
        _ => None,
    }
}

/// Merges by key; the result is a list when both were lists, a mapping otherwise.
fn merge_list_or_dict(base: Node, over: Node, separators: &[char]) -> Node {
    let both_lists = matches!((&base.value, &over.value), (Value::Seq(_), Value::Seq(_)));
    let (Some(mut merged), Some(more)) = (pairs(&base, separators), pairs(&over, separators))
    else {
        return over;
    };
    for m in more {
        match merged.iter().position(|p| p.key == m.key) {
            Some(i) => merged[i] = m,
            None => merged.push(m),
        }
    }
    if both_lists {
        // Each item as the later file wrote it.
        let items = merged.into_iter().map(|p| p.key_node).collect();
        return Node::new(base.pos, Value::Seq(items));
    }
    let entries = merged
        .into_iter()
        .map(|p| Entry {
            value: p
                .value
                .unwrap_or_else(|| Node::new(p.key_node.pos, Value::Null)),
            key_pos: p.key_node.pos,
            key: p.key,
        })
        .collect();
    Node::new(base.pos, Value::Map(entries))
}

/// A service's networks: a list of names or a mapping of names to settings.
fn merge_service_networks(base: Node, over: Node, path: &KeyPath) -> Node {
    fn entries(n: Node) -> Option<(crate::document::Pos, Vec<Entry>)> {
        match n.value {
            Value::Map(entries) => Some((n.pos, entries)),
            Value::Seq(items) => Some((
                n.pos,
                items
                    .into_iter()
                    .map(|item| Entry {
                        key: item.scalar_text().unwrap_or_default(),
                        key_pos: item.pos,
                        value: Node::new(item.pos, Value::Null),
                    })
                    .collect(),
            )),
            _ => None,
        }
    }
    match (base.value, over.value) {
        (Value::Seq(b), Value::Seq(o)) => append_unique(base.pos, b, o),
        (b, o) => {
            let over = Node::new(over.pos, o);
            match (entries(Node::new(base.pos, b)), entries(over.clone())) {
                (Some((pos, be)), Some((_, oe))) => {
                    Node::new(pos, Value::Map(merge_maps(be, oe, path)))
                }
                _ => over,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{parse, to_yaml};

    fn merged(a: &str, b: &str) -> String {
        let a = parse(a, 0).expect("a parses");
        let b = parse(b, 1).expect("b parses");
        to_yaml(&merge(a, b)).expect("serializes")
    }

    #[test]
    fn mappings_merge_and_scalars_replace() {
        let out = merged(
            "services:\n  web:\n    image: a\n    user: u\n",
            "services:\n  web:\n    image: b\n  db:\n    image: c\n",
        );
        assert_eq!(
            out,
            "services:\n  web:\n    image: b\n    user: u\n  db:\n    image: c\n"
        );
    }

    #[test]
    fn commands_replace_and_lists_append() {
        let out = merged(
            "services:\n  web:\n    command: [a, b]\n    dns: 1.1.1.1\n    deploy:\n      placement:\n        constraints: [x==1]\n",
            "services:\n  web:\n    command: [c]\n    dns: [8.8.8.8, 1.1.1.1]\n    deploy:\n      placement:\n        constraints: [y==2, x==1]\n",
        );
        assert_eq!(
            out,
            "services:\n  web:\n    command:\n    - c\n    dns:\n    - \"1.1.1.1\"\n    - \"8.8.8.8\"\n    deploy:\n      placement:\n        constraints:\n        - x==1\n        - y==2\n"
        );
    }

    #[test]
    fn unique_resources_merge_by_key() {
        let out = merged(
            "services:\n  web:\n    ports: ['8080:80', '9090:90']\n    volumes: ['./a:/data', 'logs:/logs']\n    secrets: [s1, {source: s2, target: t}]\n",
            "services:\n  web:\n    ports: [{target: 80, published: 8080, mode: host}, '7070:70']\n    volumes: ['./b:/data:ro']\n    secrets: [{source: s3, target: t}, s1]\n",
        );
        assert_eq!(
            out,
            "services:\n  web:\n    ports:\n    - target: 80\n      published: 8080\n      mode: host\n    - 9090:90\n    - 7070:70\n    volumes:\n    - ./b:/data:ro\n    - logs:/logs\n    secrets:\n    - s1\n    - source: s3\n      target: t\n"
        );
    }

    #[test]
    fn environment_merges_by_name_across_forms() {
        let out = merged(
            "services:\n  web:\n    environment: [A=1, B=2, C]\n    labels: [x=1]\n",
            "services:\n  web:\n    environment:\n      B: 3\n      D: 4\n    labels: [x=2, y=3]\n",
        );
        assert_eq!(
            out,
            "services:\n  web:\n    environment:\n      A: \"1\"\n      B: 3\n      C: null\n      D: 4\n    labels:\n    - x=2\n    - y=3\n"
        );
    }

    #[test]
    fn service_networks_merge_by_name() {
        let out = merged(
            "services:\n  web:\n    networks: [front]\n",
            "services:\n  web:\n    networks:\n      back:\n        aliases: [b]\n",
        );
        assert_eq!(
            out,
            "services:\n  web:\n    networks:\n      front: null\n      back:\n        aliases:\n        - b\n"
        );
    }

    #[test]
    fn reset_removes_and_override_replaces() {
        let a = parse(
            "services:\n  web:\n    ports: ['80:80']\n    environment: {A: 1, B: 2}\n    user: u\n",
            0,
        )
        .expect("a parses");
        let b = parse(
            "services:\n  web:\n    ports: !reset []\n    environment: !override {C: 3}\n    user: !reset null\n",
            1,
        )
        .expect("b parses");
        let mut m = merge(a, b);
        m.settle_tags();
        assert_eq!(
            to_yaml(&m).expect("serializes"),
            "services:\n  web:\n    environment:\n      C: 3\n"
        );
    }

    #[test]
    fn null_keeps_the_earlier_value() {
        let out = merged("services:\n  web:\n    image: a\n", "services:\n  web:\n");
        assert_eq!(out, "services:\n  web:\n    image: a\n");
    }
}

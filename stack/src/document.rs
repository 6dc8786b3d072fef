//! A Compose file as a tree of YAML nodes that remember where they were written.
//!
//! serde-saphyr reads the text (anchors, aliases and `<<` merge keys resolved, duplicate
//! keys refused, a budget against alias bombs and deep nesting) into [`Node`]s; the
//! interpolation, the merging of several files and the validation all work on this tree,
//! so that any error can name its file, line and column. `stack config` prints it back.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_saphyr::{Localizer, Location, Spanned, Tagged, UserMessageFormatter};
use std::borrow::Cow;
use std::fmt;

/// Where a node was written: the index of its file in the load and a 1-based line and
/// column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub file: usize,
    pub line: u64,
    pub column: u64,
}

impl Pos {
    fn from_location(l: Location) -> Self {
        Pos {
            file: 0,
            line: l.line().max(1),
            column: l.column().max(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
    /// The Compose Specification's merge tags; other tags are ignored.
    pub tag: MergeTag,
}

/// `!reset` removes a value an earlier file set; `!override` replaces it instead of
/// merging into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum MergeTag {
    #[default]
    None,
    Reset,
    Override,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping. Keys are always strings: a scalar key such as `80:`
/// is kept as its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    pub fn new(pos: Pos, value: Value) -> Self {
        Node {
            pos,
            value,
            tag: MergeTag::None,
        }
    }

    pub fn str(pos: Pos, s: impl Into<String>) -> Self {
        Node::new(pos, Value::Str(s.into()))
    }

    /// The entries of a mapping, or `None` for anything else.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// The text of a scalar (numbers and booleans as YAML writes them), `None` for null
    /// and collections.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(format_float(*f)),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The same value, positions aside.
    pub fn same_value(&self, other: &Node) -> bool {
        match (&self.value, &other.value) {
            (Value::Seq(a), Value::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_value(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x.key == y.key && x.value.same_value(&y.value))
            }
            (a, b) => a == b,
        }
    }

    /// Drops what `!reset` removes and forgets the merge tags, once files are merged.
    pub fn settle_tags(&mut self) {
        self.tag = MergeTag::None;
        match &mut self.value {
            Value::Seq(items) => {
                items.retain(|n| n.tag != MergeTag::Reset);
                items.iter_mut().for_each(Node::settle_tags);
            }
            Value::Map(entries) => {
                entries.retain(|e| e.value.tag != MergeTag::Reset);
                entries.iter_mut().for_each(|e| e.value.settle_tags());
            }
            _ => {}
        }
    }

    /// Records the file every node of the tree came from.
    fn set_file(&mut self, file: usize) {
        self.pos.file = file;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.set_file(file)),
            Value::Map(entries) => {
                for e in entries {
                    e.key_pos.file = file;
                    e.value.set_file(file);
                }
            }
            _ => {}
        }
    }
}

/// Floats as text: `1.5`, and `2.0` rather than `2`, closer to how such a value is written.
pub(crate) fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

/// A short description of a value for error messages: `"three"`, `3`, `a list`.
pub(crate) fn describe(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_float(*f),
        Value::Str(s) => {
            let mut shown: String = s.chars().take(60).collect();
            if shown.len() < s.len() {
                shown.push('…');
            }
            format!("{shown:?}")
        }
        Value::Seq(_) => "a list".to_owned(),
        Value::Map(_) => "a mapping".to_owned(),
    }
}

/// A YAML syntax error (or a file that YAML cannot represent as a tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one file's text. `file` is its index in the load, kept in every position.
pub(crate) fn parse(text: &str, file: usize) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        // `yes`/`no`/`on`/`off` stay strings, as in Docker's YAML 1.2 reader.
        strict_booleans: true,
        // `0644` is kept as written: a file mode reads it as octal, an environment
        // value keeps its leading zero.
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
        // Big stacks use one `<<: *defaults` per service, which trips the alias/anchor ratio
        // heuristic from 100 services on; Docker reads them. The absolute limits (aliases,
        // nodes, depth, merge keys) still stop alias bombs.
        budget: serde_saphyr::budget! {
            enforce_alias_anchor_ratio: false,
            max_nodes: 1_000_000,
        },
    };
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(mut node) => {
            node.set_file(file);
            Ok(node)
        }
        Err(e) => {
            let pos = e
                .location()
                .filter(|l| *l != Location::UNKNOWN)
                .map(Pos::from_location)
                .unwrap_or(Pos {
                    file,
                    line: 1,
                    column: 1,
                });
            Err(SyntaxError {
                pos: Pos { file, ..pos },
                message: syntax_message(&e),
            })
        }
    }
}

/// serde-saphyr's message for a user, without its " at line L, column C" suffix (the
/// position is printed in front) and without developer hints about its options.
fn syntax_message(e: &serde_saphyr::Error) -> String {
    struct NoLocation;
    impl Localizer for NoLocation {
        fn attach_location<'a>(&self, base: Cow<'a, str>, _loc: Location) -> Cow<'a, str> {
            base
        }
    }
    let formatter = UserMessageFormatter.with_localizer(&NoLocation);
    let text = e.render_with_formatter(&formatter);
    let line = text.lines().next().unwrap_or("invalid YAML").trim();
    if let Some(rest) = line.strip_prefix("duplicate mapping key") {
        let key = rest
            .split('`')
            .nth(1)
            .or_else(|| rest.strip_prefix(": ").and_then(|k| k.split(',').next()));
        if let Some(key) = key {
            return format!("duplicate key {key:?}");
        }
    }
    if line.contains("multiple YAML documents") || line.contains("multiple documents") {
        return "a Compose file holds one YAML document; found another `---`".to_owned();
    }
    line.to_owned()
}

// ---- Reading: serde-saphyr into nodes ----

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned: Spanned<Tagged<RawValue>> = Spanned::deserialize(d)?;
        // `defined` is where the text is (for an alias, its anchor's value).
        let at = if spanned.defined == Location::UNKNOWN {
            spanned.referenced
        } else {
            spanned.defined
        };
        let Tagged(raw, tag) = spanned.value;
        Ok(Node {
            pos: Pos::from_location(at),
            value: raw.0,
            tag: match tag.as_deref() {
                Some("!reset") => MergeTag::Reset,
                Some("!override") => MergeTag::Override,
                _ => MergeTag::None,
            },
        })
    }
}

struct RawValue(Value);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(RawValue)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_char<E>(self, v: char) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        RawValue::deserialize(d).map(|r| r.0)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        RawValue::deserialize(d).map(|r| r.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: key.value.0,
                key_pos: Pos::from_location(key.referenced),
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

/// A mapping key: any scalar, kept as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_bool<E>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i128<E>(self, v: i128) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u128<E>(self, v: u128) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E>(self, v: f64) -> Result<String, E> {
                Ok(format_float(v))
            }
            fn visit_char<E>(self, v: char) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_str<E>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
            fn visit_unit<E>(self) -> Result<String, E> {
                Ok("null".to_owned())
            }
            fn visit_none<E>(self) -> Result<String, E> {
                Ok("null".to_owned())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<String, A::Error> {
                Err(de::Error::custom(
                    "a mapping key must be a string, found a list",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<String, A::Error> {
                Err(de::Error::custom(
                    "a mapping key must be a string, found a mapping",
                ))
            }
        }
        d.deserialize_any(KeyVisitor).map(KeyText)
    }
}

// ---- Writing: nodes back to YAML (`stack config`) ----

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => s.serialize_i64(v),
                Err(_) => s.serialize_str(&i.to_string()),
            },
            Value::Float(f) => s.serialize_f64(*f),
            // The output is loaded again with interpolation: a `$` that is left must
            // stay a `$`.
            Value::Str(text) => s.serialize_str(&text.replace('$', "$$")),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for e in entries {
                    map.serialize_entry(&e.key, &e.value)?;
                }
                map.end()
            }
        }
    }
}

/// The tree as YAML text.
pub(crate) fn to_yaml(node: &Node) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: &Node) -> Vec<&str> {
        n.entries()
            .unwrap_or_default()
            .iter()
            .map(|e| e.key.as_str())
            .collect()
    }

    #[test]
    fn positions_are_one_based_and_point_at_values() {
        let n = parse("services:\n  web:\n    image: busybox\n", 3).expect("parses");
        let image = n
            .get("services")
            .and_then(|s| s.get("web"))
            .and_then(|w| w.get("image"))
            .expect("image");
        assert_eq!(image.value, Value::Str("busybox".into()));
        assert_eq!(
            image.pos,
            Pos {
                file: 3,
                line: 3,
                column: 12
            }
        );
    }

    #[test]
    fn a_big_stack_merging_one_anchor_per_service_loads() {
        // 300 services each `<<: *defaults`: far past serde-saphyr's default alias/anchor
        // ratio, and what big stacks look like; Docker reads them.
        let mut text = String::from("x-defaults: &defaults\n  image: busybox\nservices:\n");
        for i in 0..300 {
            text.push_str(&format!("  s{i}:\n    <<: *defaults\n"));
        }
        let n = parse(&text, 0).expect("parses");
        let services = n.get("services").expect("services");
        assert_eq!(keys(services).len(), 300);
    }

    #[test]
    fn scalars_keep_docker_types() {
        let n = parse("a: [yes, on, true, 0644, 0o17, 1.5, ~, '3']\n", 0).expect("parses");
        let Some(Value::Seq(items)) = n.get("a").map(|a| &a.value) else {
            panic!("a list")
        };
        let values: Vec<&Value> = items.iter().map(|i| &i.value).collect();
        assert_eq!(
            values,
            [
                &Value::Str("yes".into()),
                &Value::Str("on".into()),
                &Value::Bool(true),
                &Value::Str("0644".into()),
                &Value::Int(15),
                &Value::Float(1.5),
                &Value::Null,
                &Value::Str("3".into()),
            ]
        );
    }

    #[test]
    fn anchors_and_merge_keys_are_resolved() {
        let n = parse(
            "x-base: &base {image: a, user: u}\nweb:\n  <<: *base\n  image: b\n",
            0,
        )
        .expect("parses");
        let web = n.get("web").expect("web");
        assert_eq!(keys(web), ["image", "user"]);
        assert_eq!(
            web.get("image").map(|i| &i.value),
            Some(&Value::Str("b".into()))
        );
    }

    #[test]
    fn syntax_errors_have_positions_and_plain_messages() {
        let e = parse("a: 1\na: 2\n", 0).expect_err("duplicate");
        assert_eq!((e.pos.line, e.pos.column), (2, 1));
        assert_eq!(e.message, "duplicate key \"a\"");
        let e = parse("services: [\n", 0).expect_err("unclosed");
        assert_eq!(e.pos.line, 1);
        assert!(!e.message.contains("line"), "{}", e.message);
    }

    #[test]
    fn dollars_are_escaped_on_output() {
        let n = parse("a: 'x$y'\n", 0).expect("parses");
        let text = to_yaml(&n).expect("serializes");
        assert!(text.contains("x$$y"), "{text}");
    }
}

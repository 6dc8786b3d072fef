//! Validation: the tree of a Compose file checked against the format (Compose file
//! format 3.x as `docker stack deploy` reads it, which is also what the Compose
//! Specification allows for a stack) and turned into [`ComposeFile`]. Every error is
//! located at the offending key or value. Unknown keys are errors; keys that a stack
//! accepts but ignores are collected for one warning line.
//!
//! Each file is first checked alone ([`Mode::File`]: types and forms only, so an override
//! file may be partial), then the merged document fully ([`Mode::Merged`]: required
//! keys, references between services and top-level objects, `env_file`s and secret files
//! read from disk).

mod deploy;
mod objects;
mod service;

use crate::compose::ComposeFile;
use crate::document::{describe, Entry, Node, Pos, Value};
use crate::error::Located;
use crate::interpolate::parse_bool;
use crate::path::KeyPath;
use rswarm_proto::model::parse_duration;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One file of several: forms only.
    File,
    /// The merged document: everything.
    Merged,
}

/// What validation needs besides the tree, and what it reports besides errors.
pub(crate) struct Cx<'a> {
    pub mode: Mode,
    /// The directory of the first file: relative paths are relative to it.
    pub working_dir: &'a Path,
    /// The environment (`.env` under the process's), for `environment: [KEY]` and `~`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Keys a stack accepts and ignores, named for the warning (`build`,
    /// `deploy.resources.limits.pids`).
    pub ignored: BTreeSet<String>,
    /// Other warnings, one line each.
    pub warnings: Vec<String>,
}

impl Cx<'_> {
    fn merged(&self) -> bool {
        self.mode == Mode::Merged
    }

    fn ignore(&mut self, what: &str) {
        if self.merged() {
            self.ignored.insert(what.to_owned());
        }
    }

    fn warn(&mut self, line: String) {
        if self.merged() && !self.warnings.contains(&line) {
            self.warnings.push(line);
        }
    }

    /// A path as written in the file, absolute: `~` is the environment's HOME, and a
    /// relative path is under the working directory.
    fn host_path(&mut self, written: &str, at: &KeyPath) -> String {
        let expanded = if let Some(rest) = written.strip_prefix('~') {
            match (self.env)("HOME") {
                Some(home) => format!("{home}{rest}"),
                None => {
                    self.warn(format!(
                        "{at}: cannot expand '~' in {written:?}: HOME is not set"
                    ));
                    written.to_owned()
                }
            }
        } else {
            written.to_owned()
        };
        let path = Path::new(&expanded);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.working_dir.join(path)
        };
        clean_path(&joined).to_string_lossy().into_owned()
    }
}

/// An I/O error as a message, without the OS's error number.
pub(crate) fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

/// Removes `.` and resolves `..` without touching the file system, as Go's
/// `filepath.Clean`.
pub(crate) fn clean_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Validates a whole document.
pub(crate) fn decode(root: &Node, cx: &mut Cx<'_>) -> Result<ComposeFile, Located> {
    let path = KeyPath::root();
    let Value::Map(entries) = &root.value else {
        return Err(Located::new(
            root.pos,
            "",
            format!(
                "expected a mapping with `services:` at the top of the file, found {}",
                describe(root)
            ),
        ));
    };
    let mut file = ComposeFile::default();
    // Top-level objects first, so that services can be checked against them.
    for e in entries {
        let p = path.key(&e.key);
        match e.key.as_str() {
            "networks" => file.networks = objects::networks(&e.value, &p, cx)?,
            "volumes" => file.volumes = objects::volumes(&e.value, &p)?,
            "secrets" => file.secrets = objects::file_objects(&e.value, &p, cx, "secret")?,
            "configs" => file.configs = objects::file_objects(&e.value, &p, cx, "config")?,
            _ => {}
        }
    }
    for e in entries {
        let p = path.key(&e.key);
        match e.key.as_str() {
            "version" => file.version = Some(version(&e.value, &p)?),
            "services" => file.services = service::services(&e.value, &p, cx, &file)?,
            "networks" | "volumes" | "secrets" | "configs" => {}
            // The Compose Specification's project name; the stack's name is given on the
            // command line.
            "name" => {
                string(&e.value, &p)?;
                cx.ignore("name");
            }
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, TOP_LEVEL_KEYS)),
        }
    }
    if cx.merged() && !entries.iter().any(|e| e.key == "services") {
        return Err(Located::new(
            root.pos,
            "",
            "no `services:` in the file: a stack needs at least one service",
        ));
    }
    Ok(file)
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "secrets", "configs",
];

fn version(node: &Node, path: &KeyPath) -> Result<String, Located> {
    let text = string(node, path)?;
    let minor_ok = |m: &str| m.is_empty() || m.bytes().all(|b| b.is_ascii_digit());
    let ok = text == "3"
        || text
            .strip_prefix("3.")
            .is_some_and(|m| !m.is_empty() && minor_ok(m));
    if !ok {
        return Err(Located::new(
            node.pos,
            path,
            format!("unsupported Compose file version {text:?}: a stack needs version 3.x, or no version at all (the Compose Specification)"),
        ));
    }
    Ok(text)
}

/// `x-...` keys are extensions, for anchors and tools; they are ignored.
pub(crate) fn is_extension(key: &str) -> bool {
    key.starts_with("x-")
}

// ---- Errors ----

pub(crate) fn fail(node: &Node, path: &KeyPath, message: impl Into<String>) -> Located {
    Located::new(node.pos, path, message)
}

pub(crate) fn expected(node: &Node, path: &KeyPath, what: &str) -> Located {
    fail(
        node,
        path,
        format!("expected {what}, found {}", describe(node)),
    )
}

/// An unknown key, at the key, with the nearest known one when it looks like a typo.
pub(crate) fn unknown_key(entry: &Entry, path: &KeyPath, known: &[&str]) -> Located {
    let nearest = known
        .iter()
        .map(|k| (edit_distance(&entry.key, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min();
    let message = match nearest {
        Some((_, k)) => format!("unknown key {:?} (did you mean {k:?}?)", entry.key),
        None => format!("unknown key {:?}", entry.key),
    };
    Located::new(entry.key_pos, path, message)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- Typed reads of one node ----

pub(crate) fn mapping<'n>(node: &'n Node, path: &KeyPath) -> Result<&'n [Entry], Located> {
    node.entries()
        .ok_or_else(|| expected(node, path, "a mapping"))
}

/// A mapping, where null (`deploy:` with nothing under it) is an empty one.
pub(crate) fn mapping_or_null<'n>(node: &'n Node, path: &KeyPath) -> Result<&'n [Entry], Located> {
    match &node.value {
        Value::Null => Ok(&[]),
        _ => mapping(node, path),
    }
}

/// A string; numbers and booleans are taken as their text, as a string field is often
/// written `user: 1000`.
pub(crate) fn string(node: &Node, path: &KeyPath) -> Result<String, Located> {
    match &node.value {
        Value::Seq(_) | Value::Map(_) | Value::Null => Err(expected(node, path, "a string")),
        _ => Ok(node.scalar_text().unwrap_or_default()),
    }
}

pub(crate) fn nonempty_string(node: &Node, path: &KeyPath) -> Result<String, Located> {
    let s = string(node, path)?;
    if s.is_empty() {
        return Err(fail(node, path, "must not be empty"));
    }
    Ok(s)
}

pub(crate) fn integer(node: &Node, path: &KeyPath) -> Result<i128, Located> {
    match &node.value {
        Value::Int(i) => Ok(*i),
        Value::Str(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| expected(node, path, "an integer")),
        _ => Err(expected(node, path, "an integer")),
    }
}

pub(crate) fn unsigned(node: &Node, path: &KeyPath) -> Result<u64, Located> {
    let i = integer(node, path)?;
    u64::try_from(i).map_err(|_| expected(node, path, "a non-negative integer"))
}

pub(crate) fn boolean(node: &Node, path: &KeyPath) -> Result<bool, Located> {
    match &node.value {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) => parse_bool(s).ok_or_else(|| expected(node, path, "true or false")),
        _ => Err(expected(node, path, "true or false")),
    }
}

pub(crate) fn float(node: &Node, path: &KeyPath) -> Result<f64, Located> {
    let f = match &node.value {
        Value::Float(f) => Some(*f),
        #[allow(clippy::cast_precision_loss)]
        Value::Int(i) => Some(*i as f64),
        Value::Str(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    f.filter(|f| f.is_finite())
        .ok_or_else(|| expected(node, path, "a number"))
}

/// A duration as Docker writes them: `10s`, `1m30s`, `500ms`.
pub(crate) fn duration(node: &Node, path: &KeyPath) -> Result<Duration, Located> {
    let what = "a duration such as 10s, 1m30s or 500ms";
    match &node.value {
        Value::Str(s) => parse_duration(s).map_err(|_| expected(node, path, what)),
        Value::Int(0) => Ok(Duration::ZERO),
        Value::Int(_) | Value::Float(_) => Err(fail(
            node,
            path,
            format!(
                "expected {what}, found {}: a duration needs a unit",
                describe(node)
            ),
        )),
        _ => Err(expected(node, path, what)),
    }
}

/// A string of a fixed set.
pub(crate) fn one_of<'v>(
    node: &Node,
    path: &KeyPath,
    values: &[&'v str],
) -> Result<&'v str, Located> {
    let s = string(node, path)?;
    values.iter().find(|v| **v == s).copied().ok_or_else(|| {
        let list = match values {
            [] => String::new(),
            [one] => one.to_string(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        };
        expected(node, path, &list)
    })
}

pub(crate) fn list<'n>(node: &'n Node, path: &KeyPath) -> Result<&'n [Node], Located> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        _ => Err(expected(node, path, "a list")),
    }
}

pub(crate) fn list_of_strings(node: &Node, path: &KeyPath) -> Result<Vec<String>, Located> {
    let Value::Seq(items) = &node.value else {
        return Err(expected(node, path, "a list of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| string(item, &path.index(i)))
        .collect()
}

/// A string or a list of strings (`dns`, `env_file`, ...).
pub(crate) fn string_or_list(
    node: &Node,
    path: &KeyPath,
) -> Result<Vec<(String, Pos, KeyPath)>, Located> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let p = path.index(i);
                Ok((string(item, &p)?, item.pos, p))
            })
            .collect(),
        Value::Map(_) | Value::Null => Err(expected(node, path, "a string or a list of strings")),
        _ => Ok(vec![(string(node, path)?, node.pos, path.clone())]),
    }
}

/// A mapping of strings, or a list of `KEY=VALUE` (`environment`, `labels`, ...). The value
/// is `None` for a list item without `=` or a mapping value of null.
pub(crate) fn list_or_dict(
    node: &Node,
    path: &KeyPath,
    separators: &[char],
) -> Result<Vec<(String, Option<String>)>, Located> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .map(|e| {
                let p = path.key(&e.key);
                let value = match &e.value.value {
                    Value::Null => None,
                    Value::Seq(_) | Value::Map(_) => {
                        return Err(expected(&e.value, &p, "a string, a number or null"))
                    }
                    _ => e.value.scalar_text(),
                };
                Ok((e.key.clone(), value))
            })
            .collect(),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let text = string(item, &path.index(i))?;
                Ok(match text.split_once(separators) {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (text, None),
                })
            })
            .collect(),
        _ => Err(expected(
            node,
            path,
            "a mapping or a list of KEY=VALUE strings",
        )),
    }
}

/// A mapping of strings, e.g. `driver_opts`, or labels where a missing value is empty.
pub(crate) fn string_map(
    node: &Node,
    path: &KeyPath,
) -> Result<std::collections::BTreeMap<String, String>, Located> {
    Ok(list_or_dict(node, path, &['='])?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// Names of services and top-level objects: `[a-zA-Z0-9._-]+`.
pub(crate) fn check_name(entry: &Entry, path: &KeyPath, what: &str) -> Result<(), Located> {
    let ok = !entry.key.is_empty()
        && entry
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Located::new(
            entry.key_pos,
            path,
            format!(
                "invalid {what} name {:?}: use letters, digits, '.', '_' and '-'",
                entry.key
            ),
        ))
    }
}

/// The rough shape of a key that is accepted and ignored, checked so that a mistake in it
/// is still reported.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    Str,
    Bool,
    Int,
    Strings,
    StrOrStrings,
    ListOrDict,
    Map,
    StrOrMap,
    Any,
}

pub(crate) fn check_shape(node: &Node, path: &KeyPath, shape: Shape) -> Result<(), Located> {
    match shape {
        Shape::Str => string(node, path).map(drop),
        Shape::Bool => boolean(node, path).map(drop),
        Shape::Int => integer(node, path).map(drop),
        Shape::Strings => list_of_strings(node, path).map(drop),
        Shape::StrOrStrings => string_or_list(node, path).map(drop),
        Shape::ListOrDict => list_or_dict(node, path, &['=']).map(drop),
        Shape::Map => mapping_or_null(node, path).map(drop),
        Shape::StrOrMap => match &node.value {
            Value::Map(_) => Ok(()),
            _ => string(node, path).map(drop),
        },
        Shape::Any => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("imag", "image"), 1);
        assert_eq!(edit_distance("replica", "replicas"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(clean_path(Path::new("/a/b/./")), PathBuf::from("/a/b"));
    }
}

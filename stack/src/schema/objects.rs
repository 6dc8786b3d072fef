//! The top-level `networks`, `volumes`, `secrets` and `configs`.

use super::{
    boolean, check_name, expected, fail, is_extension, list, mapping, mapping_or_null, string,
    string_map, unknown_key, Cx,
};
use crate::compose::{FileObject, Network, Volume};
use crate::document::{Entry, Node, Value};
use crate::error::Located;
use crate::path::KeyPath;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `external: true`, or the older `external: {name: NAME}`.
struct External {
    external: bool,
    name: Option<String>,
}

fn external(node: &Node, path: &KeyPath) -> Result<External, Located> {
    match &node.value {
        Value::Map(entries) => {
            let mut name = None;
            for e in entries {
                let p = path.key(&e.key);
                match e.key.as_str() {
                    "name" => name = Some(string(&e.value, &p)?),
                    k if is_extension(k) => {}
                    _ => return Err(unknown_key(e, &p, &["name"])),
                }
            }
            Ok(External {
                external: true,
                name,
            })
        }
        _ => Ok(External {
            external: boolean(node, path)?,
            name: None,
        }),
    }
}

/// The final `name` of an external object from `name:` and the deprecated
/// `external.name`; the key when neither is given.
fn external_name(
    cx: &mut Cx<'_>,
    entry: &Entry,
    path: &KeyPath,
    kind: &str,
    name: Option<String>,
    ext: &External,
) -> Result<Option<String>, Located> {
    match (&name, &ext.name) {
        (Some(_), Some(_)) => Err(Located::new(
            entry.key_pos,
            path,
            format!("{kind}.external.name and {kind}.name conflict; use only {kind}.name"),
        )),
        (None, Some(n)) => {
            cx.warn(format!(
                "{path}: {kind}.external.name is deprecated in favor of {kind}.name"
            ));
            Ok(Some(n.clone()))
        }
        (Some(_), None) => Ok(name),
        (None, None) => Ok(Some(entry.key.clone())),
    }
}

/// The entries of a top-level section, each name checked.
fn section<'n>(node: &'n Node, path: &KeyPath, what: &str) -> Result<&'n [Entry], Located> {
    let entries = mapping_or_null(node, path)?;
    for e in entries {
        if !is_extension(&e.key) {
            check_name(e, &path.key(&e.key), what)?;
        }
    }
    Ok(entries)
}

const NETWORK_KEYS: &[&str] = &[
    "name",
    "driver",
    "driver_opts",
    "ipam",
    "external",
    "internal",
    "attachable",
    "labels",
];

pub(super) fn networks(
    node: &Node,
    path: &KeyPath,
    cx: &mut Cx<'_>,
) -> Result<BTreeMap<String, Network>, Located> {
    let mut out = BTreeMap::new();
    for entry in section(node, path, "network")? {
        if is_extension(&entry.key) {
            continue;
        }
        let p = path.key(&entry.key);
        let mut n = Network::default();
        let mut name = None;
        let mut ext = External {
            external: false,
            name: None,
        };
        let mut other_driver = None;
        for e in mapping_or_null(&entry.value, &p)? {
            let q = p.key(&e.key);
            match e.key.as_str() {
                "name" => name = Some(string(&e.value, &q)?),
                "driver" => {
                    let d = string(&e.value, &q)?;
                    if d != "overlay" {
                        other_driver = Some((&e.value, q.clone()));
                    }
                    n.driver = Some(d);
                }
                "driver_opts" => n.driver_opts = string_map(&e.value, &q)?,
                "ipam" => ipam(&e.value, &q, &mut n)?,
                "external" => ext = external(&e.value, &q)?,
                "internal" => n.internal = boolean(&e.value, &q)?,
                "attachable" => n.attachable = boolean(&e.value, &q)?,
                "labels" => n.labels = string_map(&e.value, &q)?,
                k if is_extension(k) => {}
                _ => return Err(unknown_key(e, &q, NETWORK_KEYS)),
            }
        }
        n.external = ext.external;
        if ext.external {
            n.name = external_name(cx, entry, &p, "network", name, &ext)?;
        } else {
            if let Some((d, q)) = other_driver {
                return Err(fail(
                    d,
                    &q,
                    format!(
                        "a stack creates overlay networks only, found {}; use an external network for another driver",
                        crate::document::describe(d)
                    ),
                ));
            }
            n.name = name;
        }
        out.insert(entry.key.clone(), n);
    }
    Ok(out)
}

fn ipam(node: &Node, path: &KeyPath, n: &mut Network) -> Result<(), Located> {
    for e in mapping(node, path)? {
        let p = path.key(&e.key);
        match e.key.as_str() {
            "driver" => n.ipam_driver = Some(string(&e.value, &p)?),
            "config" => {
                for (i, item) in list(&e.value, &p)?.iter().enumerate() {
                    let q = p.index(i);
                    for c in mapping(item, &q)? {
                        let r = q.key(&c.key);
                        match c.key.as_str() {
                            "subnet" => {
                                let subnet = string(&c.value, &r)?;
                                if !is_cidr(&subnet) {
                                    return Err(expected(
                                        &c.value,
                                        &r,
                                        "a subnet such as 10.0.9.0/24",
                                    ));
                                }
                                n.subnets.push(subnet);
                            }
                            k if is_extension(k) => {}
                            _ => return Err(unknown_key(c, &r, &["subnet"])),
                        }
                    }
                }
            }
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, &["driver", "config"])),
        }
    }
    Ok(())
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

const VOLUME_KEYS: &[&str] = &["name", "driver", "driver_opts", "external", "labels"];

pub(super) fn volumes(node: &Node, path: &KeyPath) -> Result<BTreeMap<String, Volume>, Located> {
    let mut out = BTreeMap::new();
    for entry in section(node, path, "volume")? {
        if is_extension(&entry.key) {
            continue;
        }
        let p = path.key(&entry.key);
        let mut v = Volume::default();
        let mut ext = External {
            external: false,
            name: None,
        };
        let mut configured = None;
        for e in mapping_or_null(&entry.value, &p)? {
            let q = p.key(&e.key);
            match e.key.as_str() {
                "name" => v.name = Some(string(&e.value, &q)?),
                "driver" => {
                    v.driver = Some(string(&e.value, &q)?);
                    configured.get_or_insert(e);
                }
                "driver_opts" => {
                    v.driver_opts = string_map(&e.value, &q)?;
                    configured.get_or_insert(e);
                }
                "labels" => {
                    v.labels = string_map(&e.value, &q)?;
                    configured.get_or_insert(e);
                }
                "external" => ext = external(&e.value, &q)?,
                // Cluster (CSI) volumes: Docker's extension, not for rswarm.
                "x-cluster-spec" => {
                    return Err(Located::new(
                        e.key_pos,
                        &q,
                        "cluster volumes are not supported",
                    ))
                }
                k if is_extension(k) => {}
                _ => return Err(unknown_key(e, &q, VOLUME_KEYS)),
            }
        }
        v.external = ext.external;
        if ext.external {
            if let Some(e) = configured {
                return Err(Located::new(
                    e.key_pos,
                    p.key(&e.key),
                    format!(
                        "conflicting parameters \"external\" and {:?} for volume {:?}",
                        e.key, entry.key
                    ),
                ));
            }
            if let (Some(_), Some(_)) = (&v.name, &ext.name) {
                return Err(Located::new(
                    entry.key_pos,
                    &p,
                    "volume.external.name and volume.name conflict; use only volume.name",
                ));
            }
            v.name = v.name.or(ext.name).or_else(|| Some(entry.key.clone()));
        }
        out.insert(entry.key.clone(), v);
    }
    Ok(out)
}

const FILE_OBJECT_KEYS: &[&str] = &[
    "name",
    "file",
    "external",
    "labels",
    "driver",
    "driver_opts",
    "template_driver",
];

/// Secrets (`kind` "secret") or configs ("config").
pub(super) fn file_objects(
    node: &Node,
    path: &KeyPath,
    cx: &mut Cx<'_>,
    kind: &str,
) -> Result<BTreeMap<String, FileObject>, Located> {
    let mut out = BTreeMap::new();
    for entry in section(node, path, kind)? {
        if is_extension(&entry.key) {
            continue;
        }
        let p = path.key(&entry.key);
        let mut o = FileObject::default();
        let mut name = None;
        let mut ext = External {
            external: false,
            name: None,
        };
        let mut file: Option<(&Node, String)> = None;
        for e in mapping(&entry.value, &p)? {
            let q = p.key(&e.key);
            match e.key.as_str() {
                "name" => name = Some(string(&e.value, &q)?),
                "file" => file = Some((&e.value, string(&e.value, &q)?)),
                "external" => ext = external(&e.value, &q)?,
                "labels" => o.labels = string_map(&e.value, &q)?,
                "driver" | "driver_opts" if kind == "secret" => {
                    return Err(Located::new(
                        e.key_pos,
                        &q,
                        "secret drivers are not supported: give the secret's file, or create it and mark it external",
                    ))
                }
                "template_driver" => {
                    string(&e.value, &q)?;
                    cx.ignore(&format!("{}.template_driver", path));
                }
                k if is_extension(k) => {}
                _ => {
                    let known: &[&str] = if kind == "secret" {
                        FILE_OBJECT_KEYS
                    } else {
                        &["name", "file", "external", "labels", "template_driver"]
                    };
                    return Err(unknown_key(e, &q, known));
                }
            }
        }
        o.external = ext.external;
        match (ext.external, file) {
            (true, Some((f, _))) => {
                return Err(fail(
                    f,
                    &p.key("file"),
                    format!("an external {kind} has no file: it exists already"),
                ))
            }
            (true, None) => o.name = external_name(cx, entry, &p, kind, name, &ext)?,
            (false, Some((f, written))) => {
                o.name = name;
                let q = p.key("file");
                let abs = PathBuf::from(cx.host_path(&written, &q));
                if cx.merged() {
                    if let Err(e) = std::fs::metadata(&abs).and_then(|m| {
                        if m.is_dir() {
                            Err(std::io::Error::other("it is a directory"))
                        } else {
                            Ok(())
                        }
                    }) {
                        return Err(fail(
                            f,
                            &q,
                            format!("cannot read {written}: {}", super::io_message(&e)),
                        ));
                    }
                }
                o.file = Some(abs);
            }
            (false, None) => {
                if cx.merged() {
                    return Err(Located::new(
                        entry.key_pos,
                        &p,
                        format!("a {kind} needs a file, or external: true"),
                    ));
                }
                o.name = name;
            }
        }
        out.insert(entry.key.clone(), o);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.0.9.0/24"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.9.0"));
        assert!(!is_cidr("10.0.9.0/33"));
        assert!(!is_cidr("ten/8"));
    }
}

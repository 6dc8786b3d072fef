//! A service's `deploy:` section.

use super::{
    check_shape, duration, fail, float, integer, is_extension, list, list_of_strings, mapping,
    mapping_or_null, one_of, string, string_map, unknown_key, unsigned, Cx, Shape,
};
use crate::compose::{
    Deploy, DeployMode, PlacementFile, ResourceValues, ResourcesFile, RestartPolicyFile,
    UpdateConfigFile,
};
use crate::document::{Node, Value};
use crate::error::Located;
use crate::path::KeyPath;
use crate::spec::{EndpointMode, FailureAction, UpdateOrder};
use crate::syntax::{parse_bytes, parse_cpus};
use rswarm_proto::model::RestartCondition;

const NO_JOBS: &str =
    "jobs (replicated-job, global-job) are not supported; use replicated or global";

const DEPLOY_KEYS: &[&str] = &[
    "mode",
    "endpoint_mode",
    "replicas",
    "labels",
    "rollback_config",
    "update_config",
    "resources",
    "restart_policy",
    "placement",
];

/// The deploy section, and where its `replicas`, `max_replicas_per_node` and
/// `endpoint_mode` were written (for the checks that need the whole service).
pub(super) struct DeployRead<'n> {
    pub deploy: Deploy,
    pub replicas_node: Option<&'n Node>,
    pub max_per_node_node: Option<&'n Node>,
    pub endpoint_node: Option<&'n Node>,
}

pub(super) fn deploy<'n>(
    node: &'n Node,
    path: &KeyPath,
    cx: &mut Cx<'_>,
) -> Result<DeployRead<'n>, Located> {
    let mut read = DeployRead {
        deploy: Deploy::default(),
        replicas_node: None,
        max_per_node_node: None,
        endpoint_node: None,
    };
    let d = &mut read.deploy;
    for e in mapping_or_null(node, path)? {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "mode" => {
                d.mode = match string(v, &p)?.as_str() {
                    "replicated" => DeployMode::Replicated,
                    "global" => DeployMode::Global,
                    "replicated-job" | "global-job" => return Err(fail(v, &p, NO_JOBS)),
                    _ => return Err(super::expected(v, &p, "replicated or global")),
                };
            }
            "replicas" => {
                read.replicas_node = Some(v);
                d.replicas = Some(unsigned(v, &p)?);
            }
            "labels" => d.labels = string_map(v, &p)?,
            "update_config" => d.update_config = Some(update_config(v, &p)?),
            "rollback_config" => d.rollback_config = Some(update_config(v, &p)?),
            "resources" => d.resources = resources(v, &p, cx)?,
            "restart_policy" => d.restart_policy = Some(restart_policy(v, &p)?),
            "placement" => {
                let (placement, max_node) = placement(v, &p)?;
                d.placement = placement;
                read.max_per_node_node = max_node;
            }
            "endpoint_mode" => {
                read.endpoint_node = Some(v);
                d.endpoint_mode = match one_of(v, &p, &["vip", "dnsrr"])? {
                    "dnsrr" => EndpointMode::Dnsrr,
                    _ => EndpointMode::Vip,
                };
            }
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, DEPLOY_KEYS)),
        }
    }
    Ok(read)
}

const UPDATE_KEYS: &[&str] = &[
    "parallelism",
    "delay",
    "failure_action",
    "monitor",
    "max_failure_ratio",
    "order",
];

fn update_config(node: &Node, path: &KeyPath) -> Result<UpdateConfigFile, Located> {
    let mut u = UpdateConfigFile::default();
    for e in mapping_or_null(node, path)? {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "parallelism" => u.parallelism = Some(unsigned(v, &p)?),
            "delay" => u.delay = Some(duration(v, &p)?),
            "monitor" => u.monitor = Some(duration(v, &p)?),
            "failure_action" => {
                u.failure_action = Some(match one_of(v, &p, &["pause", "continue", "rollback"])? {
                    "continue" => FailureAction::Continue,
                    "rollback" => FailureAction::Rollback,
                    _ => FailureAction::Pause,
                });
            }
            "max_failure_ratio" => {
                let r = float(v, &p)?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(super::expected(v, &p, "a ratio between 0 and 1"));
                }
                u.max_failure_ratio = Some(r);
            }
            "order" => {
                u.order = Some(match one_of(v, &p, &["stop-first", "start-first"])? {
                    "start-first" => UpdateOrder::StartFirst,
                    _ => UpdateOrder::StopFirst,
                });
            }
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, UPDATE_KEYS)),
        }
    }
    Ok(u)
}

fn resources(node: &Node, path: &KeyPath, cx: &mut Cx<'_>) -> Result<ResourcesFile, Located> {
    let mut r = ResourcesFile::default();
    for e in mapping_or_null(node, path)? {
        let p = path.key(&e.key);
        match e.key.as_str() {
            "limits" => r.limits = resource_values(&e.value, &p, cx, "limits")?,
            "reservations" => r.reservations = resource_values(&e.value, &p, cx, "reservations")?,
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, &["limits", "reservations"])),
        }
    }
    Ok(r)
}

fn resource_values(
    node: &Node,
    path: &KeyPath,
    cx: &mut Cx<'_>,
    which: &str,
) -> Result<ResourceValues, Located> {
    let mut r = ResourceValues::default();
    let known: &[&str] = if which == "limits" {
        &["cpus", "memory", "pids"]
    } else {
        &["cpus", "memory", "generic_resources"]
    };
    for e in mapping_or_null(node, path)? {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "cpus" => {
                let text = string(v, &p)?;
                r.nano_cpus = Some(parse_cpus(&text).map_err(|m| fail(v, &p, m))?);
            }
            "memory" => {
                r.memory_bytes = Some(match &v.value {
                    Value::Int(_) => unsigned(v, &p)?,
                    _ => parse_bytes(&string(v, &p)?).map_err(|m| fail(v, &p, m))?,
                });
            }
            "pids" if which == "limits" => {
                integer(v, &p)?;
                cx.ignore("deploy.resources.limits.pids");
            }
            "generic_resources" if which == "reservations" => {
                for (i, item) in list(v, &p)?.iter().enumerate() {
                    generic_resource(item, &p.index(i))?;
                }
                cx.ignore("deploy.resources.reservations.generic_resources");
            }
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, known)),
        }
    }
    Ok(r)
}

fn generic_resource(node: &Node, path: &KeyPath) -> Result<(), Located> {
    for e in mapping(node, path)? {
        let p = path.key(&e.key);
        match e.key.as_str() {
            "discrete_resource_spec" => {
                for f in mapping(&e.value, &p)? {
                    let q = p.key(&f.key);
                    match f.key.as_str() {
                        "kind" => check_shape(&f.value, &q, Shape::Str)?,
                        "value" => {
                            float(&f.value, &q)?;
                        }
                        _ => return Err(unknown_key(f, &q, &["kind", "value"])),
                    }
                }
            }
            _ => return Err(unknown_key(e, &p, &["discrete_resource_spec"])),
        }
    }
    Ok(())
}

fn restart_policy(node: &Node, path: &KeyPath) -> Result<RestartPolicyFile, Located> {
    let mut r = RestartPolicyFile::default();
    for e in mapping_or_null(node, path)? {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "condition" => {
                r.condition = Some(match one_of(v, &p, &["none", "on-failure", "any"])? {
                    "none" => RestartCondition::None,
                    "on-failure" => RestartCondition::OnFailure,
                    _ => RestartCondition::Any,
                });
            }
            "delay" => r.delay = Some(duration(v, &p)?),
            "max_attempts" => r.max_attempts = Some(unsigned(v, &p)?),
            "window" => r.window = Some(duration(v, &p)?),
            k if is_extension(k) => {}
            _ => {
                return Err(unknown_key(
                    e,
                    &p,
                    &["condition", "delay", "max_attempts", "window"],
                ))
            }
        }
    }
    Ok(r)
}

fn placement<'n>(
    node: &'n Node,
    path: &KeyPath,
) -> Result<(PlacementFile, Option<&'n Node>), Located> {
    let mut pl = PlacementFile::default();
    let mut max_node = None;
    for e in mapping_or_null(node, path)? {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "constraints" => {
                let items = list(v, &p)?;
                pl.constraints = list_of_strings(v, &p)?;
                for (i, (c, item)) in pl.constraints.iter().zip(items).enumerate() {
                    check_constraint(c).map_err(|m| fail(item, &p.index(i), m))?;
                }
            }
            "preferences" => {
                for (i, item) in list(v, &p)?.iter().enumerate() {
                    let q = p.index(i);
                    for f in mapping(item, &q)? {
                        let r = q.key(&f.key);
                        match f.key.as_str() {
                            "spread" => pl.preferences.push(super::nonempty_string(&f.value, &r)?),
                            _ => return Err(unknown_key(f, &r, &["spread"])),
                        }
                    }
                }
            }
            "max_replicas_per_node" => {
                max_node = Some(v);
                pl.max_replicas_per_node = Some(unsigned(v, &p)?);
            }
            k if is_extension(k) => {}
            _ => {
                return Err(unknown_key(
                    e,
                    &p,
                    &["constraints", "preferences", "max_replicas_per_node"],
                ))
            }
        }
    }
    Ok((pl, max_node))
}

/// A constraint is `KEY==VALUE` or `KEY!=VALUE`.
fn check_constraint(c: &str) -> Result<(), String> {
    let (key, value) = c
        .split_once("==")
        .or_else(|| c.split_once("!="))
        .ok_or_else(|| {
            format!(
                "invalid constraint {c:?}: expected KEY==VALUE or KEY!=VALUE, e.g. node.role==worker"
            )
        })?;
    if key.trim().is_empty() || value.trim().is_empty() {
        return Err(format!(
            "invalid constraint {c:?}: both sides of the operator are needed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints() {
        assert!(check_constraint("node.role == worker").is_ok());
        assert!(check_constraint("node.labels.zone!=a").is_ok());
        assert!(check_constraint("node.role").is_err());
        assert!(check_constraint("==worker").is_err());
    }
}

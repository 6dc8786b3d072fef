//! nftables rulesets: service VIPs inside a task's namespace (table `ip rswarm_vip`) and the
//! node's published ports and egress NAT in the underlay namespace (table `ip rswarm`).
//!
//! Each ruleset is one table rewritten in one `nft` transaction (add table, flush it, add its
//! chains and rules), so packets never see it half-applied. The builders ([`vip_ruleset`],
//! [`host_ruleset`]) are pure; `apply_*` run `nft -j -f -` in the right namespace.

use crate::gateway::{in_netns, GatewayConfig, NetnsError};
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Map, MetaKey, NamedExpression, NgMode, Numgen, Payload,
    PayloadField, Prefix, SetItem, CT,
};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, Operator, Reject, RejectType, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use rswarm_proto::model::Ipv4Cidr;
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

/// The table holding a task's service VIPs.
pub const VIP_TABLE: &str = "rswarm_vip";
/// The table holding the node's published ports and egress NAT.
pub const HOST_TABLE: &str = "rswarm";

/// A service VIP and the task addresses its connections are spread over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipBackends {
    pub vip: Ipv4Addr,
    pub backends: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A routing-mesh port: `published` on any local address goes to one of `backends`
/// (addresses on the ingress overlay) at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressPort {
    pub proto: Proto,
    pub published: u16,
    pub target: u16,
    pub backends: Vec<Ipv4Addr>,
}

/// A host-mode port: `published` on any local address goes to a task on this node, at its
/// gateway-bridge address `backend`, port `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub proto: Proto,
    pub published: u16,
    pub target: u16,
    pub backend: Ipv4Addr,
}

/// Everything the node's `ip rswarm` table holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostRules {
    pub ingress: Vec<IngressPort>,
    pub host_mode: Vec<HostPort>,
    /// The underlay's interface into the ingress overlay (routing-mesh traffic leaves by it).
    pub ingress_if: Option<String>,
    /// The ingress overlay's subnet.
    pub ingress_subnet: Option<Ipv4Cidr>,
    /// The gateway bridge whose subnet is masqueraded on egress.
    pub gateway: GatewayConfig,
    /// The cluster's overlay subnets: a task's traffic to them never leaves through the
    /// gateway bridge (networks are isolated; a task reaches a network only by being on it).
    pub isolated: Vec<Ipv4Cidr>,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot serialize the nftables ruleset: {0}")]
    Serialize(serde_json::Error),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
}

// ---- expression helpers -------------------------------------------------------------------

fn s(v: impl ToString) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(nftables::expr::Meta { key }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matches(left, Operator::EQ, right)
}

fn prefix(c: Ipv4Cidr) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(c.network())),
        len: u32::from(c.prefix()),
    }))
}

/// One of `addrs`, picked per new connection: a plain address for one, else
/// `numgen random mod N map { 0 : a0, 1 : a1, ... }`.
fn balanced(addrs: &[Ipv4Addr]) -> Expression<'static> {
    match addrs {
        [one] => s(one),
        _ => Expression::Named(NamedExpression::Map(Box::new(Map {
            key: Expression::Named(NamedExpression::Numgen(Numgen {
                mode: NgMode::Random,
                ng_mod: u32::try_from(addrs.len()).unwrap_or(u32::MAX),
                offset: None,
            })),
            data: Expression::Named(NamedExpression::Set(
                (0u32..)
                    .zip(addrs)
                    .map(|(i, a)| SetItem::Mapping(Expression::Number(i), s(a)))
                    .collect(),
            )),
        }))),
    }
}

fn dnat(addr: Expression<'static>, port: Option<u16>) -> Statement<'static> {
    Statement::DNAT(Some(NAT {
        addr: Some(addr),
        family: None,
        port: port.map(|p| Expression::Number(u32::from(p))),
        flags: None,
    }))
}

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}

// ---- batch building ---------------------------------------------------------------------

struct TableBatch {
    table: &'static str,
    objects: Vec<NfObject<'static>>,
}

impl TableBatch {
    /// Starts the transaction that replaces `table`: add (a no-op if present), then flush.
    fn replace(table: &'static str) -> Self {
        let t = Table {
            family: NfFamily::IP,
            name: table.into(),
            handle: None,
        };
        Self {
            table,
            objects: vec![
                NfObject::CmdObject(NfCmd::Add(NfListObject::Table(t.clone()))),
                NfObject::CmdObject(NfCmd::Flush(FlushObject::Table(t))),
            ],
        }
    }

    fn base_chain(&mut self, name: &'static str, kind: NfChainType, hook: NfHook, prio: i32) {
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(
                Chain {
                    family: NfFamily::IP,
                    table: self.table.into(),
                    name: name.into(),
                    _type: Some(kind),
                    hook: Some(hook),
                    prio: Some(prio),
                    policy: Some(NfChainPolicy::Accept),
                    ..Chain::default()
                },
            ))));
    }

    fn chain(&mut self, name: &'static str) {
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(
                Chain {
                    family: NfFamily::IP,
                    table: self.table.into(),
                    name: name.into(),
                    ..Chain::default()
                },
            ))));
    }

    fn rule(&mut self, chain: &'static str, expr: Vec<Statement<'static>>) {
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
                family: NfFamily::IP,
                table: self.table.into(),
                chain: chain.into(),
                expr: expr.into(),
                ..Rule::default()
            }))));
    }

    fn build(self) -> Nftables<'static> {
        Nftables {
            objects: self.objects.into(),
        }
    }
}

/// Deletes `table` if present (adding it first makes the delete never fail).
fn delete_table(table: &'static str) -> Nftables<'static> {
    let t = Table {
        family: NfFamily::IP,
        name: table.into(),
        handle: None,
    };
    Nftables {
        objects: vec![
            NfObject::CmdObject(NfCmd::Add(NfListObject::Table(t.clone()))),
            NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(t))),
        ]
        .into(),
    }
}

// ---- VIPs --------------------------------------------------------------------------------

/// Table `ip rswarm_vip` for a task: locally generated connections to a VIP are DNATed (same
/// port, any protocol) to one of its backends; to a VIP without backends they are rejected,
/// so clients fail fast instead of timing out.
pub fn vip_ruleset(vips: &[VipBackends]) -> Nftables<'static> {
    let mut b = TableBatch::replace(VIP_TABLE);
    // dstnat priority, so the rewritten destination is what gets routed.
    b.base_chain("output", NfChainType::NAT, NfHook::Output, -100);
    // reject is not allowed in nat chains; a filter chain after dstnat sees only VIPs that
    // were not rewritten, i.e. those without backends.
    b.base_chain("reject", NfChainType::Filter, NfHook::Output, 0);
    for v in vips {
        let daddr = eq(field("ip", "daddr"), s(v.vip));
        if v.backends.is_empty() {
            b.rule(
                "reject",
                vec![
                    daddr.clone(),
                    eq(meta(MetaKey::L4proto), s("tcp")),
                    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
                ],
            );
            b.rule("reject", vec![daddr, Statement::Reject(None)]);
        } else {
            b.rule("output", vec![daddr, dnat(balanced(&v.backends), None)]);
        }
    }
    b.build()
}

/// Replaces the VIP table inside the task's namespace.
pub fn apply_vips(task_netns: &Path, vips: &[VipBackends]) -> Result<(), NftError> {
    run_nft(Some(task_netns), &vip_ruleset(vips))
}

/// Removes the VIP table from the task's namespace (no error if absent).
pub fn clear_vips(task_netns: &Path) -> Result<(), NftError> {
    run_nft(Some(task_netns), &delete_table(VIP_TABLE))
}

// ---- the node's table ----------------------------------------------------------------------

/// Table `ip rswarm` for the underlay namespace:
/// - `prerouting`/`output` (nat, dstnat): packets to any local address jump to `published`,
///   which DNATs host-mode ports to their task and ingress ports to a balanced backend;
/// - `postrouting` (nat, srcnat): masquerade the gateway subnet leaving by anything but the
///   bridge (egress), DNATed traffic from the subnet back into the bridge (hairpin), and
///   traffic into the ingress overlay (so replies come back through
///   this node, which holds the DNAT state);
/// - `forward` (filter, policy accept): a place for forwarding policy; accepts everything.
pub fn host_ruleset(rules: &HostRules) -> Nftables<'static> {
    let mut b = TableBatch::replace(HOST_TABLE);
    b.base_chain("prerouting", NfChainType::NAT, NfHook::Prerouting, -100);
    b.base_chain("output", NfChainType::NAT, NfHook::Output, -100);
    b.base_chain("postrouting", NfChainType::NAT, NfHook::Postrouting, 100);
    b.base_chain("forward", NfChainType::Filter, NfHook::Forward, 0);
    b.base_chain("input", NfChainType::Filter, NfHook::Input, 0);
    b.chain("published");

    let local = || {
        eq(
            Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Type,
                flags: HashSet::from([FibFlag::Daddr]),
            })),
            s("local"),
        )
    };
    let jump = || {
        Statement::Jump(JumpTarget {
            target: "published".into(),
        })
    };
    b.rule("prerouting", vec![local(), jump()]);
    b.rule("output", vec![local(), jump()]);

    let dport = |p: Proto, port: u16| {
        eq(
            field(p.as_str(), "dport"),
            Expression::Number(u32::from(port)),
        )
    };
    for h in &rules.host_mode {
        b.rule(
            "published",
            vec![
                dport(h.proto, h.published),
                dnat(s(h.backend), Some(h.target)),
            ],
        );
    }
    // A mesh port with no serving task is refused on every node (the mesh owns the port:
    // nothing else on the node answers it). reject is not allowed in nat chains, so this
    // is the input filter, which only sees what was not DNATed.
    for i in &rules.ingress {
        if i.backends.is_empty() {
            let reject = match i.proto {
                Proto::Tcp => Some(Reject::new(Some(RejectType::TCPReset), None)),
                Proto::Udp => None,
            };
            b.rule(
                "input",
                vec![dport(i.proto, i.published), Statement::Reject(reject)],
            );
        } else {
            b.rule(
                "published",
                vec![
                    dport(i.proto, i.published),
                    dnat(balanced(&i.backends), Some(i.target)),
                ],
            );
        }
    }
    for subnet in &rules.isolated {
        b.rule(
            "forward",
            vec![
                eq(meta(MetaKey::Iifname), s(&rules.gateway.bridge)),
                eq(field("ip", "daddr"), prefix(subnet.subnet())),
                Statement::Drop(None),
            ],
        );
    }

    let gw = &rules.gateway;
    b.rule(
        "postrouting",
        vec![
            eq(field("ip", "saddr"), prefix(gw.subnet.subnet())),
            matches(meta(MetaKey::Oifname), Operator::NEQ, s(&gw.bridge)),
            masquerade(),
        ],
    );
    // Hairpin: a task reaching a published port that leads back into the bridge. Without
    // this the backend would answer the client task directly, bypassing the un-DNAT.
    b.rule(
        "postrouting",
        vec![
            eq(field("ip", "saddr"), prefix(gw.subnet.subnet())),
            eq(meta(MetaKey::Oifname), s(&gw.bridge)),
            matches(
                Expression::Named(NamedExpression::CT(CT {
                    key: "status".into(),
                    family: None,
                    dir: None,
                })),
                Operator::IN,
                s("dnat"),
            ),
            masquerade(),
        ],
    );
    let mut into_ingress = Vec::new();
    if let Some(ifname) = &rules.ingress_if {
        into_ingress.push(eq(meta(MetaKey::Oifname), s(ifname)));
    }
    if let Some(subnet) = rules.ingress_subnet {
        into_ingress.push(eq(field("ip", "daddr"), prefix(subnet.subnet())));
    }
    if !into_ingress.is_empty() {
        into_ingress.push(masquerade());
        b.rule("postrouting", into_ingress);
    }
    b.build()
}

/// Replaces the node's table in the current (underlay) namespace.
pub fn apply_host(rules: &HostRules) -> Result<(), NftError> {
    run_nft(None, &host_ruleset(rules))
}

/// Removes the node's table from the current namespace (no error if absent).
pub fn clear_host() -> Result<(), NftError> {
    run_nft(None, &delete_table(HOST_TABLE))
}

// ---- running nft ---------------------------------------------------------------------------

fn nft_program() -> &'static str {
    // Daemons may run with a PATH lacking /usr/sbin.
    if Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

/// Feeds `ruleset` to `nft -j -f -` as one transaction, in `netns` if given. (Not the
/// `nftables` crate's helper: it does not capture nft's stderr, which holds the reason.)
fn run_nft(netns: Option<&Path>, ruleset: &Nftables<'_>) -> Result<(), NftError> {
    let payload = serde_json::to_vec(ruleset).map_err(NftError::Serialize)?;
    let program = nft_program();
    let spawn_err = |source| NftError::Spawn {
        program: program.to_owned(),
        source,
    };
    // nft is spawned from a thread in the target namespace, so it starts there.
    in_netns(netns, || {
        let mut child = Command::new(program)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&payload).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(NftError::Failed {
            status: out.status.to_string(),
            stderr: stderr.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("cidr")
    }

    fn to_json(n: &Nftables<'_>) -> Vec<Value> {
        let v = serde_json::to_value(n).expect("serialize");
        v["nftables"].as_array().expect("array").clone()
    }

    fn rules_of(objs: &[Value], chain: &str) -> Vec<Value> {
        objs.iter()
            .filter_map(|o| o.get("add")?.get("rule"))
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].clone())
            .collect()
    }

    #[test]
    fn vip_table_is_replaced_in_one_batch() {
        let objs = to_json(&vip_ruleset(&[]));
        assert_eq!(
            objs[0],
            json!({"add": {"table": {"family": "ip", "name": "rswarm_vip"}}})
        );
        assert_eq!(
            objs[1],
            json!({"flush": {"table": {"family": "ip", "name": "rswarm_vip"}}})
        );
        assert_eq!(
            objs[2],
            json!({"add": {"chain": {"family": "ip", "table": "rswarm_vip", "name": "output",
                "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}}})
        );
        assert_eq!(objs[3]["add"]["chain"]["type"], "filter");
        assert_eq!(objs.len(), 4);
    }

    #[test]
    fn vip_with_backends_is_dnat_balanced_by_numgen() {
        let objs = to_json(&vip_ruleset(&[
            VipBackends {
                vip: ip("10.0.1.2"),
                backends: vec![ip("10.0.1.5"), ip("10.0.1.6")],
            },
            VipBackends {
                vip: ip("10.0.1.3"),
                backends: vec![ip("10.0.1.7")],
            },
        ]));
        let rules = rules_of(&objs, "output");
        assert_eq!(
            rules[0],
            json!([
                {"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": "10.0.1.2", "op": "=="}},
                {"dnat": {"addr": {"map": {
                    "key": {"numgen": {"mode": "random", "mod": 2}},
                    "data": {"set": [[0, "10.0.1.5"], [1, "10.0.1.6"]]}}}}}
            ])
        );
        assert_eq!(rules[1][1], json!({"dnat": {"addr": "10.0.1.7"}}));
        assert!(rules_of(&objs, "reject").is_empty());
    }

    #[test]
    fn vip_without_backends_is_rejected() {
        let objs = to_json(&vip_ruleset(&[VipBackends {
            vip: ip("10.0.1.2"),
            backends: vec![],
        }]));
        assert!(rules_of(&objs, "output").is_empty());
        let rules = rules_of(&objs, "reject");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0][2], json!({"reject": {"type": "tcp reset"}}));
        assert_eq!(rules[1][1], json!({"reject": null}));
    }

    fn sample_host() -> HostRules {
        HostRules {
            ingress: vec![
                IngressPort {
                    proto: Proto::Tcp,
                    published: 8080,
                    target: 80,
                    backends: vec![ip("10.255.0.5"), ip("10.255.0.6")],
                },
                IngressPort {
                    proto: Proto::Udp,
                    published: 5353,
                    target: 53,
                    backends: vec![],
                },
            ],
            host_mode: vec![HostPort {
                proto: Proto::Udp,
                published: 9000,
                target: 9001,
                backend: ip("172.18.0.2"),
            }],
            ingress_if: Some("rsw_ingress".to_owned()),
            ingress_subnet: Some(cidr("10.255.0.0/16")),
            gateway: GatewayConfig::default(),
            isolated: vec![cidr("10.31.0.0/24")],
        }
    }

    #[test]
    fn host_chains_and_local_jump() {
        let objs = to_json(&host_ruleset(&sample_host()));
        assert_eq!(
            objs[0],
            json!({"add": {"table": {"family": "ip", "name": "rswarm"}}})
        );
        assert_eq!(
            objs[1],
            json!({"flush": {"table": {"family": "ip", "name": "rswarm"}}})
        );
        let chains: Vec<_> = objs
            .iter()
            .filter_map(|o| o.get("add")?.get("chain"))
            .map(|c| (c["name"].clone(), c["hook"].clone(), c["prio"].clone()))
            .collect();
        assert_eq!(
            chains,
            vec![
                (json!("prerouting"), json!("prerouting"), json!(-100)),
                (json!("output"), json!("output"), json!(-100)),
                (json!("postrouting"), json!("postrouting"), json!(100)),
                (json!("forward"), json!("forward"), json!(0)),
                (json!("input"), json!("input"), json!(0)),
                (json!("published"), Value::Null, Value::Null),
            ]
        );
        let jump = json!([
            {"match": {"left": {"fib": {"result": "type", "flags": ["daddr"]}},
                       "right": "local", "op": "=="}},
            {"jump": {"target": "published"}}
        ]);
        assert_eq!(rules_of(&objs, "prerouting"), vec![jump.clone()]);
        assert_eq!(rules_of(&objs, "output"), vec![jump]);
        // Tasks never reach an overlay subnet through the egress bridge.
        assert_eq!(
            rules_of(&objs, "forward"),
            vec![json!([
                {"match": {"left": {"meta": {"key": "iifname"}}, "right": "rsw_gwbridge", "op": "=="}},
                {"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": {"prefix": {"addr": "10.31.0.0", "len": 24}}, "op": "=="}},
                {"drop": null}
            ])]
        );
    }

    #[test]
    fn host_published_ports() {
        let objs = to_json(&host_ruleset(&sample_host()));
        let rules = rules_of(&objs, "published");
        // The ingress port without backends is refused, not DNATed.
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules_of(&objs, "input"),
            vec![json!([
                {"match": {"left": {"payload": {"protocol": "udp", "field": "dport"}},
                           "right": 5353, "op": "=="}},
                {"reject": null}
            ])]
        );
        assert_eq!(
            rules[0],
            json!([
                {"match": {"left": {"payload": {"protocol": "udp", "field": "dport"}},
                           "right": 9000, "op": "=="}},
                {"dnat": {"addr": "172.18.0.2", "port": 9001}}
            ])
        );
        assert_eq!(
            rules[1],
            json!([
                {"match": {"left": {"payload": {"protocol": "tcp", "field": "dport"}},
                           "right": 8080, "op": "=="}},
                {"dnat": {"addr": {"map": {
                    "key": {"numgen": {"mode": "random", "mod": 2}},
                    "data": {"set": [[0, "10.255.0.5"], [1, "10.255.0.6"]]}}},
                  "port": 80}}
            ])
        );
    }

    #[test]
    fn host_masquerade() {
        let objs = to_json(&host_ruleset(&sample_host()));
        let rules = rules_of(&objs, "postrouting");
        assert_eq!(
            rules,
            vec![
                json!([
                    {"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}},
                               "right": {"prefix": {"addr": "172.18.0.0", "len": 16}}, "op": "=="}},
                    {"match": {"left": {"meta": {"key": "oifname"}}, "right": "rsw_gwbridge", "op": "!="}},
                    {"masquerade": null}
                ]),
                json!([
                    {"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}},
                               "right": {"prefix": {"addr": "172.18.0.0", "len": 16}}, "op": "=="}},
                    {"match": {"left": {"meta": {"key": "oifname"}}, "right": "rsw_gwbridge", "op": "=="}},
                    {"match": {"left": {"ct": {"key": "status"}}, "right": "dnat", "op": "in"}},
                    {"masquerade": null}
                ]),
                json!([
                    {"match": {"left": {"meta": {"key": "oifname"}}, "right": "rsw_ingress", "op": "=="}},
                    {"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}},
                               "right": {"prefix": {"addr": "10.255.0.0", "len": 16}}, "op": "=="}},
                    {"masquerade": null}
                ]),
            ]
        );
        let bare = HostRules::default();
        assert_eq!(
            rules_of(&to_json(&host_ruleset(&bare)), "postrouting").len(),
            2
        );
    }

    #[test]
    fn clearing_adds_then_deletes() {
        assert_eq!(
            to_json(&delete_table(HOST_TABLE)),
            vec![
                json!({"add": {"table": {"family": "ip", "name": "rswarm"}}}),
                json!({"delete": {"table": {"family": "ip", "name": "rswarm"}}}),
            ]
        );
    }

    /// Root-only end-to-end tests in scratch namespaces (`RSWARM_NET_TESTS=1`).
    mod net {
        use super::*;
        use crate::gateway::{self, GatewayConfig};
        use std::path::PathBuf;
        use std::process::{Child, Output};
        use std::time::{Duration, Instant};

        fn enabled() -> bool {
            std::env::var("RSWARM_NET_TESTS").as_deref() == Ok("1")
        }

        fn run(args: &[&str]) -> Output {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect("spawn");
            assert!(
                out.status.success(),
                "{args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }

        /// Scratch namespaces, servers and files, removed on drop even when a test fails.
        struct Lab {
            prefix: String,
            netns: Vec<String>,
            children: Vec<Child>,
            dir: PathBuf,
        }

        impl Lab {
            fn new(tag: &str) -> Self {
                let prefix = format!("rswnf-{}-{tag}", std::process::id());
                let dir = std::env::temp_dir().join(&prefix);
                std::fs::create_dir_all(&dir).expect("mkdir");
                Self {
                    prefix,
                    netns: Vec::new(),
                    children: Vec::new(),
                    dir,
                }
            }

            fn ns(&mut self, role: &str) -> String {
                let name = format!("{}-{role}", self.prefix);
                run(&["ip", "netns", "add", &name]);
                self.netns.push(name.clone());
                run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
                name
            }

            fn path(name: &str) -> PathBuf {
                Path::new("/run/netns").join(name)
            }

            /// `busybox httpd` in `ns` serving `body` on port 80.
            fn httpd(&mut self, ns: &str, body: &str) {
                let root = self.dir.join(ns);
                std::fs::create_dir_all(&root).expect("mkdir");
                std::fs::write(root.join("index.html"), body).expect("write");
                let root = root.to_string_lossy().into_owned();
                let child = Command::new("ip")
                    .args([
                        "netns", "exec", ns, "busybox", "httpd", "-f", "-p", "80", "-h", &root,
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn httpd");
                self.children.push(child);
            }
        }

        impl Drop for Lab {
            fn drop(&mut self) {
                for c in &mut self.children {
                    // Child::kill signals exactly this PID (ip netns exec execs busybox).
                    let _ = c.kill();
                    let _ = c.wait();
                }
                for n in &self.netns {
                    let _ = Command::new("ip").args(["netns", "del", n]).status();
                }
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }

        /// `busybox wget` from `ns`: the body, or None on failure. (This busybox's `wget -T`
        /// crashes, hence `timeout`.)
        fn wget(ns: &str, url: &str) -> Option<String> {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", ns, "timeout", "5", "busybox", "wget", "-q", "-O", "-", url,
                ])
                .output()
                .expect("spawn wget");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }

        /// Retries while the server starts.
        fn wget_retry(ns: &str, url: &str) -> Option<String> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = wget(ns, url);
                if got.is_some() || Instant::now() > deadline {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        /// Runs `f` on a thread inside `ns`: the "node's daemon" view of the underlay.
        fn as_node<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
            crate::gateway::in_netns(Some(&Lab::path(ns)), f).expect("enter node netns")
        }

        #[test]
        fn gateway_vips_host_ports_ingress_and_egress() {
            if !enabled() {
                return;
            }
            let mut lab = Lab::new("e2e");
            let host = lab.ns("host");
            let a = lab.ns("a");
            let b = lab.ns("b");
            let client = lab.ns("client");
            let ing = lab.ns("ing");
            // The client's link to the node (an "outside" network).
            run(&[
                "ip", "-n", &host, "link", "add", "h-cli", "type", "veth", "peer", "name", "c0",
                "netns", &client,
            ]);
            run(&[
                "ip",
                "-n",
                &host,
                "addr",
                "add",
                "192.168.202.1/24",
                "dev",
                "h-cli",
            ]);
            run(&["ip", "-n", &host, "link", "set", "h-cli", "up"]);
            run(&[
                "ip",
                "-n",
                &client,
                "addr",
                "add",
                "192.168.202.2/24",
                "dev",
                "c0",
            ]);
            run(&["ip", "-n", &client, "link", "set", "c0", "up"]);
            // A stand-in for the ingress overlay: a backend with no route to the client.
            run(&[
                "ip", "-n", &host, "link", "add", "h-ing", "type", "veth", "peer", "name", "i0",
                "netns", &ing,
            ]);
            run(&[
                "ip",
                "-n",
                &host,
                "addr",
                "add",
                "10.255.0.1/24",
                "dev",
                "h-ing",
            ]);
            run(&["ip", "-n", &host, "link", "set", "h-ing", "up"]);
            run(&[
                "ip",
                "-n",
                &ing,
                "addr",
                "add",
                "10.255.0.2/24",
                "dev",
                "i0",
            ]);
            run(&["ip", "-n", &ing, "link", "set", "i0", "up"]);

            let cfg = GatewayConfig::default();
            let (pa, pb) = (Lab::path(&a), Lab::path(&b));
            as_node(&host, || -> Result<(), gateway::GatewayError> {
                gateway::ensure_bridge(&cfg)?;
                gateway::ensure_bridge(&cfg)?;
                gateway::attach(&cfg, &pa, "rswnf-a0", "eth0", cidr("172.18.0.2/16"), 1450)?;
                gateway::attach(&cfg, &pa, "rswnf-a0", "eth0", cidr("172.18.0.2/16"), 1450)?;
                gateway::attach(&cfg, &pb, "rswnf-b0", "eth0", cidr("172.18.0.3/16"), 1450)
            })
            .expect("gateway setup");
            let mtu = run(&["ip", "-n", &a, "-o", "link", "show", "eth0"]);
            assert!(String::from_utf8_lossy(&mtu.stdout).contains("mtu 1450"));
            let fwd = run(&[
                "ip",
                "netns",
                "exec",
                &host,
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ]);
            assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");

            lab.httpd(&a, "task-a");
            lab.httpd(&client, "client");
            lab.httpd(&ing, "ingress-backend");

            // (i) across the bridge.
            assert_eq!(
                wget_retry(&b, "http://172.18.0.2/").as_deref(),
                Some("task-a")
            );

            // (ii) VIPs in task B: one backend, two backends (balanced), none (fails fast).
            apply_vips(
                &pb,
                &[
                    VipBackends {
                        vip: ip("10.99.0.5"),
                        backends: vec![ip("172.18.0.2")],
                    },
                    VipBackends {
                        vip: ip("10.99.0.7"),
                        backends: vec![ip("172.18.0.2"), ip("192.168.202.2")],
                    },
                    VipBackends {
                        vip: ip("10.99.0.6"),
                        backends: vec![],
                    },
                ],
            )
            .expect("apply vips");
            apply_vips(
                &pb,
                &[
                    VipBackends {
                        vip: ip("10.99.0.5"),
                        backends: vec![ip("172.18.0.2")],
                    },
                    VipBackends {
                        vip: ip("10.99.0.7"),
                        backends: vec![ip("172.18.0.2"), ip("192.168.202.2")],
                    },
                    VipBackends {
                        vip: ip("10.99.0.6"),
                        backends: vec![],
                    },
                ],
            )
            .expect("re-apply vips");
            assert_eq!(wget(&b, "http://10.99.0.5/").as_deref(), Some("task-a"));
            let started = Instant::now();
            assert_eq!(wget(&b, "http://10.99.0.6/"), None);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "no-backend VIP should fail fast"
            );

            // (iv) egress needs the node's masquerade: the client has no route to 172.18/16.
            assert_eq!(wget(&b, "http://192.168.202.2/"), None, "no NAT yet");
            let rules = HostRules {
                ingress: vec![IngressPort {
                    proto: Proto::Tcp,
                    published: 8080,
                    target: 80,
                    backends: vec![ip("10.255.0.2")],
                }],
                host_mode: vec![HostPort {
                    proto: Proto::Tcp,
                    published: 8081,
                    target: 80,
                    backend: ip("172.18.0.2"),
                }],
                ingress_if: Some("h-ing".to_owned()),
                ingress_subnet: Some(cidr("10.255.0.0/24")),
                isolated: Vec::new(),
                gateway: cfg.clone(),
            };
            as_node(&host, || apply_host(&rules)).expect("apply host");
            as_node(&host, || apply_host(&rules)).expect("re-apply host");
            assert_eq!(wget(&b, "http://192.168.202.2/").as_deref(), Some("client"));

            let mut seen = HashSet::new();
            for _ in 0..20 {
                seen.insert(wget(&b, "http://10.99.0.7/").expect("balanced VIP"));
            }
            assert_eq!(
                seen,
                HashSet::from(["task-a".to_owned(), "client".to_owned()])
            );

            // (iii) host-mode port, from outside and from the node itself.
            assert_eq!(
                wget(&client, "http://192.168.202.1:8081/").as_deref(),
                Some("task-a")
            );
            assert_eq!(
                wget(&host, "http://192.168.202.1:8081/").as_deref(),
                Some("task-a")
            );
            // Hairpin: tasks on the bridge reaching a published port back into the bridge.
            assert_eq!(
                wget(&b, "http://192.168.202.1:8081/").as_deref(),
                Some("task-a")
            );
            assert_eq!(
                wget(&a, "http://192.168.202.1:8081/").as_deref(),
                Some("task-a")
            );
            // Routing mesh: the ingress backend has no route to the client, so this needs the
            // masquerade into the ingress network.
            assert_eq!(
                wget(&client, "http://192.168.202.1:8080/").as_deref(),
                Some("ingress-backend")
            );
            assert_eq!(
                wget(&host, "http://192.168.202.1:8080/").as_deref(),
                Some("ingress-backend")
            );

            // Clearing removes the tables (twice is fine).
            as_node(&host, clear_host).expect("clear host");
            as_node(&host, clear_host).expect("clear host again");
            assert_eq!(wget(&client, "http://192.168.202.1:8081/"), None);
            clear_vips(&pb).expect("clear vips");
            clear_vips(&pb).expect("clear vips again");
            let tables = run(&["ip", "netns", "exec", &b, "nft", "list", "tables"]);
            assert!(!String::from_utf8_lossy(&tables.stdout).contains("rswarm_vip"));

            // Detach and bridge removal, both idempotent.
            as_node(&host, || -> Result<(), gateway::GatewayError> {
                gateway::detach("rswnf-b0")?;
                gateway::detach("rswnf-b0")?;
                gateway::remove_bridge(&cfg)?;
                gateway::remove_bridge(&cfg)
            })
            .expect("teardown");
            let links = run(&["ip", "-n", &b, "-o", "link"]);
            assert!(!String::from_utf8_lossy(&links.stdout).contains("eth0"));
        }

        #[test]
        fn attach_recovers_a_half_made_pair_and_reports_nft_errors() {
            if !enabled() {
                return;
            }
            let mut lab = Lab::new("edge");
            let host = lab.ns("host");
            let t = lab.ns("t");
            let cfg = GatewayConfig::default();
            let pt = Lab::path(&t);
            // Without the bridge, attach says so.
            let e = as_node(&host, || {
                gateway::attach(&cfg, &pt, "rswnf-t0", "eth0", cidr("172.18.0.9/16"), 1500)
            });
            assert!(
                matches!(e, Err(gateway::GatewayError::NoBridge(_))),
                "{e:?}"
            );
            // A host end whose task end is gone (here: a lone veth) is replaced.
            run(&[
                "ip", "-n", &host, "link", "add", "rswnf-t0", "type", "veth", "peer", "name",
                "junk",
            ]);
            as_node(&host, || -> Result<(), gateway::GatewayError> {
                gateway::ensure_bridge(&cfg)?;
                gateway::attach(&cfg, &pt, "rswnf-t0", "eth0", cidr("172.18.0.9/16"), 1500)
            })
            .expect("attach over a stale veth");
            let route = run(&["ip", "-n", &t, "route", "show", "default"]);
            assert!(String::from_utf8_lossy(&route.stdout).contains("via 172.18.0.1 dev eth0"));
            // A task interface that is not ours is reported, not taken.
            let e = as_node(&host, || {
                gateway::attach(&cfg, &pt, "rswnf-t1", "eth0", cidr("172.18.0.10/16"), 1500)
            });
            assert!(
                matches!(e, Err(gateway::GatewayError::Occupied { .. })),
                "{e:?}"
            );
            // nft's own message comes back in the error.
            let bad = HostRules {
                ingress_if: Some("x".repeat(40)),
                ..HostRules::default()
            };
            let e = as_node(&host, || apply_host(&bad));
            let msg = e.expect_err("overlong ifname").to_string();
            assert!(msg.starts_with("nft failed"), "{msg}");
            assert!(!msg.contains('\n'));
        }
    }
}

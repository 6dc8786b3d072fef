//! What the control API does for networks: create (the allocator chooses the subnet,
//! gateway and VNI), list, remove (refused while a service uses the network).

use crate::allocator::Allocator;
use crate::control::ControlError;
use crate::ids::{now_ms, random_id};
use crate::manager::Manager;
use crate::proposer::{ProposeError, Proposer};
use rswarm_proto::convert::network_to_pb;
use rswarm_proto::model::{Command, CommandError, Meta, Network, NetworkId, NetworkSpec};
use rswarm_proto::pb;
use std::time::Duration;
use tracing::debug;

/// How often a write whose allocation lost a race is allocated and proposed again.
pub(crate) const ALLOCATION_ATTEMPTS: usize = 5;
/// How long a manager waits for its store to catch up before allocating again.
const CATCH_UP: Duration = Duration::from_secs(2);

/// After a write lost an allocation race: waits until this manager has applied every
/// entry its log holds, so that the next allocation sees the winner. (A follower applies
/// what the leader committed a little after the leader answers its forwarded write.)
pub(crate) async fn catch_up(m: &Manager) {
    let mut metrics = m.raft.metrics();
    let target = metrics.borrow().last_log_index;
    let caught_up = metrics.wait_for(|x| x.last_applied.map(|l| l.index) >= target);
    let _ = tokio::time::timeout(CATCH_UP, caught_up).await;
}

pub async fn create_network(
    m: &Manager,
    spec: Option<pb::NetworkSpec>,
) -> Result<pb::Network, ControlError> {
    let spec =
        spec.ok_or_else(|| ControlError::InvalidArgument("a network spec is required".into()))?;
    let spec =
        NetworkSpec::try_from(spec).map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
    if spec.ingress {
        return Err(ControlError::InvalidArgument(format!(
            "network {}: the ingress network is made by the managers when a service first publishes a port",
            spec.name
        )));
    }
    make_network(m, spec).await
}

/// The routing mesh's network, made the first time a service publishes a port through
/// it (Swarm makes it at `init`; made on demand here, so clusters that publish nothing
/// carry no ingress sandbox on every node).
pub(crate) async fn ensure_ingress(m: &Manager) -> Result<NetworkId, ControlError> {
    for _ in 0..ALLOCATION_ATTEMPTS {
        if let Some(id) = m.store.view(|s| s.ingress_network().map(|n| n.id.clone())) {
            return Ok(id);
        }
        let spec = NetworkSpec {
            name: INGRESS.into(),
            ingress: true,
            ..Default::default()
        };
        match make_network(m, spec).await {
            Ok(n) => return Ok(NetworkId(n.id)),
            // Made concurrently by another request: look again.
            Err(ControlError::FailedPrecondition(_)) => catch_up(m).await,
            Err(e) => return Err(e),
        }
    }
    Err(ControlError::FailedPrecondition(format!(
        "a network named {INGRESS} exists but is not the ingress network; remove it to publish ports"
    )))
}

/// The ingress network's name, as Swarm's.
pub const INGRESS: &str = "ingress";

async fn make_network(m: &Manager, spec: NetworkSpec) -> Result<pb::Network, ControlError> {
    let id = NetworkId(random_id());
    let now = now_ms();
    for attempt in 1..=ALLOCATION_ATTEMPTS {
        let network = m.store.view(|s| {
            if s.networks.values().any(|n| n.spec.name == spec.name) {
                return Err(name_taken(&spec.name));
            }
            let allocation = Allocator::new(s)
                .allocate_network(&spec)
                .map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
            Ok(Network {
                id: id.clone(),
                meta: Meta {
                    version: 0,
                    created_at: now,
                    updated_at: now,
                },
                spec: spec.clone(),
                allocation,
                node_endpoints: Default::default(),
            })
        })?;
        match m
            .proposer
            .propose(Command::CreateNetwork(Box::new(network.clone())))
            .await
        {
            Ok(_) => {
                let stored = m
                    .store
                    .view(|s| s.networks.get(&id).cloned())
                    .unwrap_or(network);
                return Ok(network_to_pb(&stored));
            }
            Err(ProposeError::Refused(CommandError::Exists { .. })) => {
                return Err(name_taken(&spec.name))
            }
            Err(ProposeError::Refused(CommandError::Conflict(why)))
                if attempt < ALLOCATION_ATTEMPTS =>
            {
                debug!(network.name = %spec.name, "allocation lost a race ({why}); allocating again");
                catch_up(m).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::FailedPrecondition(format!(
        "network {}: the allocation kept colliding with concurrent changes; try again",
        spec.name
    )))
}

fn name_taken(name: &str) -> ControlError {
    ControlError::FailedPrecondition(format!("a network named {name} already exists"))
}

pub fn list_networks(m: &Manager) -> Vec<pb::Network> {
    m.store
        .view(|s| s.networks.values().map(network_to_pb).collect())
}

pub async fn remove_network(m: &Manager, key: &str) -> Result<(), ControlError> {
    let network = m.store.view(|s| s.find_network(key).cloned())?;
    m.proposer
        .propose(Command::RemoveNetwork { id: network.id })
        .await
        .map_err(|e| match e {
            ProposeError::Refused(e @ CommandError::InUse { .. }) => {
                ControlError::FailedPrecondition(e.to_string())
            }
            e => e.into(),
        })?;
    Ok(())
}

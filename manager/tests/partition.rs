//! Managers under network partitions: in-process clusters of real managers (Raft over the
//! real gRPC transport, mutual TLS and authorisation) whose links a test cuts and heals.
//! See `common` for the harness.
//!
//! What must hold: a leader cut off from the majority loses the cluster to a new leader,
//! nothing a minority accepts is ever committed or visible anywhere (not even on the
//! minority once it has caught up), the majority keeps committing, and a restarted
//! manager catches up.

mod common;

use common::{election_timeout_max, run, wait_for, Cluster, TestResult};
use openraft::ServerState;
use rswarm_manager::manager::Manager;
use rswarm_manager::proposer::Proposer;
use rswarm_manager::store::State;
use rswarm_proto::model::{Command, Node, NodeId};
use std::sync::Arc;
use std::time::Duration;

/// The longest a whole test may take, set-up included.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// For a new leader to be elected once the old one is cut off: the followers wait out the
/// leader lease plus an election timeout (~2.5 s), then vote.
const ELECTION: Duration = Duration::from_secs(10);
/// For the stores to agree after writes or a heal.
const CONVERGE: Duration = Duration::from_secs(15);
/// How long a write on the minority side is given to (wrongly) commit.
const MINORITY_WRITE: Duration = Duration::from_secs(3);
/// For any single write that should commit.
const WRITE: Duration = Duration::from_secs(10);

/// A write that is visible as the presence of node `id` (a worker, which no component
/// acts on).
fn marker(id: &str) -> Command {
    Command::CreateNode(Box::new(Node {
        id: NodeId::from(id),
        ..Default::default()
    }))
}

fn has(state: &State, id: &str) -> bool {
    state.nodes.contains_key(&NodeId::from(id))
}

/// Checks on every running manager that `id` is (or is not) in its store.
fn check_everywhere(c: &Cluster, id: &str, present: bool) -> TestResult {
    for i in 0..c.len() {
        let m = c.manager(i)?;
        if m.store.view(|s| has(s, id)) != present {
            let what = if present {
                "missing from"
            } else {
                "visible on"
            };
            return Err(format!("{id} is {what} manager {i}").into());
        }
    }
    Ok(())
}

/// Proposes through `m`'s proposer, bounded.
async fn propose(m: &Manager, cmd: Command) -> TestResult<u64> {
    let index = tokio::time::timeout(WRITE, m.proposer.propose(cmd))
        .await
        .map_err(|_| format!("a write through manager {} did not finish", m.raft_id))??;
    Ok(index)
}

/// The outcome of a write on the minority side: it must not commit. Giving up (the
/// timeout) or an error are both fine.
fn never_committed<T: std::fmt::Debug, E>(
    who: &str,
    outcome: Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> TestResult {
    match outcome {
        Ok(Ok(committed)) => {
            Err(format!("{who}: a write on the minority committed: {committed:?}").into())
        }
        Ok(Err(_)) | Err(_) => Ok(()),
    }
}

fn last_log_index(m: &Manager) -> Option<u64> {
    m.raft.metrics().borrow().last_log_index
}

fn last_applied(m: &Manager) -> Option<u64> {
    m.raft.metrics().borrow().last_applied.map(|l| l.index)
}

/// Waits until `m` follows `leader` (after a heal: it has heard of the new term).
async fn wait_follows(m: &Manager, leader: u64) -> TestResult {
    wait_for(
        &format!("manager {} to follow raft id {leader}", m.raft_id),
        CONVERGE,
        || {
            let metrics = m.raft.metrics().borrow().clone();
            if metrics.state == ServerState::Follower && metrics.current_leader == Some(leader) {
                Ok(())
            } else {
                Err(format!(
                    "state {:?}, current leader {:?}, term {}",
                    metrics.state, metrics.current_leader, metrics.current_term
                ))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_to_all_managers() -> TestResult {
    run(3, TEST_LIMIT, |c| async move {
        let all: Vec<usize> = (0..c.len()).collect();
        let li = c.wait_leader_among(&all, ELECTION).await?;
        let fi = (0..c.len()).find(|&i| i != li).ok_or("no follower")?;
        let (leader, follower) = (c.manager(li)?, c.manager(fi)?);

        // Through the leader: the cluster object.
        let mut cluster = leader
            .store
            .view(|s| s.cluster.clone())
            .ok_or("no cluster object")?;
        cluster.spec.cert_expiry_secs = 1234;
        let cluster_version = propose(&leader, Command::UpdateCluster(Box::new(cluster))).await?;

        // Through a follower, which forwards to the leader: its own node, and a new one.
        assert!(!follower.is_leader(), "manager {fi} was to be a follower");
        let follower_node = c.members[fi].node_id.clone();
        let mut node = follower
            .store
            .view(|s| s.nodes.get(&follower_node).cloned())
            .ok_or("the follower's node is not in its store")?;
        node.spec
            .labels
            .insert("written-via".into(), "follower".into());
        let node_version = propose(&follower, Command::UpdateNode(Box::new(node))).await?;
        propose(&follower, marker("created-via-follower")).await?;

        let state = c.wait_converged(CONVERGE).await?;
        let cluster = state.cluster.as_ref().ok_or("no cluster object")?;
        assert_eq!(cluster.spec.cert_expiry_secs, 1234);
        assert_eq!(cluster.meta.version, cluster_version);
        let node = &state.nodes[&follower_node];
        assert_eq!(
            node.spec.labels.get("written-via").map(String::as_str),
            Some("follower")
        );
        assert_eq!(node.meta.version, node_version);
        // `wait_converged` compared every store with this one; check each anyway.
        check_everywhere(&c, "created-via-follower", true)?;
        for i in 0..c.len() {
            assert_eq!(
                c.manager(i)?.store.view(|s| s.clone()),
                state,
                "manager {i}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_loses_leadership_and_its_writes_never_appear() -> TestResult {
    run(3, TEST_LIMIT, |c| async move {
        let all: Vec<usize> = (0..c.len()).collect();
        let oi = c.wait_leader_among(&all, ELECTION).await?;
        let old = c.manager(oi)?;
        let majority: Vec<usize> = all.iter().copied().filter(|&i| i != oi).collect();

        c.isolate(oi);

        // The old leader still takes a write (into its own log only); it must never commit.
        let before = last_log_index(&old);
        let minority_write = tokio::spawn({
            let old = old.clone();
            async move {
                tokio::time::timeout(
                    MINORITY_WRITE,
                    old.raft.client_write(marker("written-by-isolated-leader")),
                )
                .await
            }
        });
        let accepted_at = wait_for(
            "the isolated leader to append the write to its log",
            ELECTION,
            || match last_log_index(&old) {
                Some(i) if Some(i) > before => Ok(i),
                other => Err(format!("last log index {other:?}, was {before:?}")),
            },
        )
        .await?;

        let ni = c.wait_leader_among(&majority, ELECTION).await?;
        let new = c.manager(ni)?;
        propose(&new, marker("written-by-majority")).await?;
        // Through the other majority manager too, forwarded to the new leader.
        let other = majority
            .iter()
            .copied()
            .find(|&i| i != ni)
            .ok_or("no other")?;
        let other = c.manager(other)?;
        propose(&other, marker("forwarded-by-majority")).await?;

        never_committed("isolated leader", minority_write.await?)?;
        assert!(
            last_applied(&old) < Some(accepted_at),
            "while cut off, the isolated leader applied up to {:?}, past its lone entry {accepted_at}",
            last_applied(&old)
        );
        check_everywhere(&c, "written-by-isolated-leader", false)?;
        assert!(
            !old.store.view(|s| has(s, "written-by-majority")),
            "the isolated leader sees the majority's write while cut off"
        );

        c.heal_all();
        wait_follows(&old, new.raft_id).await?;
        let state = c.wait_converged(CONVERGE).await?;
        // The old leader has applied past the index its lone entry held: that entry was
        // replaced by the new leader's log, not merely still pending.
        let applied = last_applied(&old);
        assert!(
            applied > Some(accepted_at),
            "the old leader applied only up to {applied:?}, its lone entry was {accepted_at}"
        );
        assert!(has(&state, "written-by-majority"), "the majority's write is lost");
        assert!(has(&state, "forwarded-by-majority"), "the forwarded write is lost");
        assert!(
            !has(&state, "written-by-isolated-leader"),
            "the isolated leader's write appeared after the heal"
        );
        check_everywhere(&c, "written-by-majority", true)?;
        check_everywhere(&c, "written-by-isolated-leader", false)?;
        Ok(())
    })
    .await
}

/// A leader that has lost its quorum should stop acting as leader by itself (etcd's and
/// swarmkit's CheckQuorum), at the latest soon after the majority has elected another.
/// openraft 0.9.25 never does this itself (its election timer skips leaders), so the
/// manager checks the leader lease (`Manager::is_leader`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_steps_down() -> TestResult {
    run(3, TEST_LIMIT, |c| async move {
        let all: Vec<usize> = (0..c.len()).collect();
        let oi = c.wait_leader_among(&all, ELECTION).await?;
        let old = c.manager(oi)?;
        let majority: Vec<usize> = all.iter().copied().filter(|&i| i != oi).collect();
        c.isolate(oi);
        let ni = c.wait_leader_among(&majority, ELECTION).await?;
        let new_term = c.manager(ni)?.raft.metrics().borrow().current_term;
        wait_for(
            "the isolated leader to step down",
            2 * election_timeout_max(),
            || {
                let m = old.raft.metrics().borrow().clone();
                // Raft's own state stays Leader in openraft 0.9; the manager stops acting
                // as one once its lease runs out.
                if !old.is_leader() {
                    Ok(())
                } else {
                    Err(format!(
                        "manager {oi} is still {:?} of term {} (current leader {:?}, {:?} ms \
                         since a quorum acknowledged it) while manager {ni} leads term {new_term}",
                        m.state, m.current_term, m.current_leader, m.millis_since_quorum_ack
                    ))
                }
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// A write through the proposer of a leader that has lost its quorum fails once the
/// proposer's deadline (`WRITE_DEADLINE`, 10 s) has passed, rather than waiting for as long
/// as the partition lasts (the control API, the dispatcher's liveness loop and joins would
/// hang); and it is not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposer_on_isolated_leader_gives_up_by_its_deadline() -> TestResult {
    run(3, TEST_LIMIT, |c| async move {
        let all: Vec<usize> = (0..c.len()).collect();
        let oi = c.wait_leader_among(&all, ELECTION).await?;
        let old = c.manager(oi)?;
        c.isolate(oi);
        let outcome = tokio::time::timeout(
            Duration::from_secs(15),
            old.proposer.propose(marker("written-by-isolated-leader")),
        )
        .await;
        match outcome {
            Err(_) => {
                return Err("the write on the isolated leader was still waiting after 15 s".into())
            }
            Ok(Ok(index)) => {
                return Err(format!("the isolated leader committed alone at {index}").into())
            }
            Ok(Err(e)) => assert!(e.is_temporary(), "{e}"),
        }
        c.heal_all();
        c.wait_leader_among(&all, ELECTION).await?;
        c.wait_converged(CONVERGE).await?;
        check_everywhere(&c, "written-by-isolated-leader", false)?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_cannot_commit_majority_can() -> TestResult {
    run(5, TEST_LIMIT, |c| async move {
        let all: Vec<usize> = (0..c.len()).collect();
        let oi = c.wait_leader_among(&all, ELECTION).await?;
        // The old leader and one follower on the minority side: the harder case, since
        // the minority keeps a leader it believes in.
        let fi = all
            .iter()
            .copied()
            .find(|&i| i != oi)
            .ok_or("no follower")?;
        let minority = vec![oi, fi];
        let majority: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !minority.contains(i))
            .collect();
        c.partition(&minority, &majority);

        // Both minority managers try to write: directly on their leader, and through the
        // follower's proposer (forwarded to that leader).
        let old = c.manager(oi)?;
        let minority_follower = c.manager(fi)?;
        let leader_write = tokio::spawn({
            let old = old.clone();
            async move {
                tokio::time::timeout(
                    MINORITY_WRITE,
                    old.raft.client_write(marker("minority-via-leader")),
                )
                .await
            }
        });
        let follower_write = tokio::spawn({
            let f = minority_follower.clone();
            async move {
                tokio::time::timeout(
                    MINORITY_WRITE,
                    f.proposer.propose(marker("minority-via-follower")),
                )
                .await
            }
        });

        // The majority elects a leader and commits, directly and forwarded.
        let ni = c.wait_leader_among(&majority, ELECTION).await?;
        let new = c.manager(ni)?;
        propose(&new, marker("majority-via-leader")).await?;
        let mf = majority
            .iter()
            .copied()
            .find(|&i| i != ni)
            .ok_or("no follower")?;
        let mf = c.manager(mf)?;
        propose(&mf, marker("majority-via-follower")).await?;

        never_committed("minority leader", leader_write.await?)?;
        never_committed("minority follower", follower_write.await?)?;
        for &i in &minority {
            let m = c.manager(i)?;
            for id in [
                "minority-via-leader",
                "minority-via-follower",
                "majority-via-leader",
            ] {
                assert!(!m.store.view(|s| has(s, id)), "{id} visible on manager {i}");
            }
        }
        for &i in &majority {
            let m = c.manager(i)?;
            wait_for(
                &format!("manager {i} to apply the majority's writes"),
                CONVERGE,
                || {
                    m.store
                        .view(|s| has(s, "majority-via-leader") && has(s, "majority-via-follower"))
                        .then_some(())
                        .ok_or_else(|| "not yet".to_owned())
                },
            )
            .await?;
        }

        c.heal_all();
        for &i in &minority {
            let m = c.manager(i)?;
            wait_follows(&m, new.raft_id).await?;
        }
        let state = c.wait_converged(CONVERGE).await?;
        for id in ["majority-via-leader", "majority-via-follower"] {
            assert!(has(&state, id), "{id} lost");
            check_everywhere(&c, id, true)?;
        }
        for id in ["minority-via-leader", "minority-via-follower"] {
            assert!(!has(&state, id), "{id} appeared");
            check_everywhere(&c, id, false)?;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restart_catches_up() -> TestResult {
    run(3, TEST_LIMIT, |c| async move {
        let all: Vec<usize> = (0..c.len()).collect();
        let li = c.wait_leader_among(&all, ELECTION).await?;
        let leader = c.manager(li)?;
        let fi = all.iter().copied().find(|&i| i != li).ok_or("no follower")?;
        let raft_id = c.members[fi].raft_id;

        let follower = c.manager(fi)?;
        let (before, applied_before) = (follower.store.view(|s| s.clone()), last_applied(&follower));
        c.stop(fi).await?;
        drop(follower);
        assert!(c.manager(fi).is_err());
        // Two of three still commit.
        let written: Vec<String> = (0..20).map(|k| format!("written-while-down-{k}")).collect();
        for id in &written {
            propose(&leader, marker(id)).await?;
        }
        let mut cluster = leader
            .store
            .view(|s| s.cluster.clone())
            .ok_or("no cluster object")?;
        cluster.spec.cert_expiry_secs = 4321;
        propose(&leader, Command::UpdateCluster(Box::new(cluster))).await?;

        // Restarted while still cut off, it rebuilds its store from its own disk.
        c.isolate(fi);
        let restarted: Arc<Manager> = c.restart(fi).await?;
        assert_eq!(restarted.raft_id, raft_id);
        wait_for(
            "the restarted manager to rebuild its store from its own log",
            CONVERGE,
            || {
                if restarted.store.view(|s| s == &before) && last_applied(&restarted) == applied_before {
                    Ok(())
                } else {
                    Err(format!(
                        "applied up to {:?}, had {applied_before:?} before the stop; {} nodes, had {}",
                        last_applied(&restarted),
                        restarted.store.view(|s| s.nodes.len()),
                        before.nodes.len()
                    ))
                }
            },
        )
        .await?;

        // Then it catches up with what it missed.
        c.heal_all();
        c.wait_leader_among(&all, ELECTION).await?;
        let state = c.wait_converged(CONVERGE).await?;
        for id in &written {
            assert!(has(&state, id), "{id} missing");
        }
        assert_eq!(
            state.cluster.as_ref().map(|cl| cl.spec.cert_expiry_secs),
            Some(4321)
        );
        assert_eq!(restarted.store.view(|s| s.clone()), state);
        let (voters, _) = restarted.members();
        assert_eq!(voters.len(), 3, "voters {voters:?}");
        Ok(())
    })
    .await
}

//! Ranking: which of the nodes that passed the filters is best, kept incrementally.
//!
//! Nodes sit in a [`Tree`]: one level per spread preference, each level splitting its nodes by
//! the value of a label (nodes without the label form a group of their own), as swarmkit's
//! `nodeset.tree`. Every branch keeps its children ordered by (tasks of the service in the
//! branch, tiebreak), every leaf its nodes by (tasks of the service, total tasks, tiebreak,
//! index). Picking walks down the smallest entries, O(depth × log n); placing a task updates
//! the chosen node and the branches above it, O(depth × log n). Without preferences the tree
//! is a single leaf.

use std::collections::{BTreeMap, BTreeSet};

/// How a node is ordered in its leaf: tasks of the service, total tasks, tiebreak, index.
pub(crate) type NodeKey = (u64, u64, u64, usize);

const ROOT: usize = 0;

#[derive(Debug, Default)]
struct Branch {
    parent: usize,
    tiebreak: u64,
    /// Tasks of the service on the branch's nodes (counted when the tree was built, plus the
    /// ones placed since; a node that fills up keeps counting, since its tasks are still there).
    service_tasks: u64,
    /// (service tasks, tiebreak, branch) of each child with nodes left.
    children: BTreeSet<(u64, u64, usize)>,
    /// Leaves only: the nodes that can still take a task.
    members: BTreeSet<NodeKey>,
    /// Leaves only, while building: the nodes that passed the filters.
    candidates: Vec<NodeKey>,
}

impl Branch {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.members.is_empty()
    }
}

pub(crate) struct Tree<'a> {
    depth: usize,
    branches: Vec<Branch>,
    /// (parent, label value) → child, only while building.
    index: BTreeMap<(usize, Option<&'a str>), usize>,
}

impl<'a> Tree<'a> {
    pub(crate) fn new(depth: usize) -> Self {
        Self {
            depth,
            branches: vec![Branch::default()],
            index: BTreeMap::new(),
        }
    }

    /// Adds a node that passed the filters. `path` holds its value for each preference
    /// (`depth` entries); `value_tiebreak` orders equal branches deterministically.
    pub(crate) fn insert(
        &mut self,
        path: &[Option<&'a str>],
        key: NodeKey,
        value_tiebreak: impl Fn(Option<&str>) -> u64,
    ) {
        debug_assert_eq!(path.len(), self.depth);
        let mut b = ROOT;
        self.branches[ROOT].service_tasks += key.0;
        for v in path {
            b = match self.index.get(&(b, *v)) {
                Some(&c) => c,
                None => {
                    let c = self.branches.len();
                    self.branches.push(Branch {
                        parent: b,
                        tiebreak: value_tiebreak(*v),
                        ..Default::default()
                    });
                    self.index.insert((b, *v), c);
                    c
                }
            };
            self.branches[b].service_tasks += key.0;
        }
        self.branches[b].candidates.push(key);
    }

    /// Orders each leaf and links the branches, once every node is in (their counts are final
    /// only then). `tasks` is how many tasks will be placed: a leaf keeps only its `tasks`
    /// best nodes, because a node's key only grows when it takes a task, so `tasks` picks
    /// from a leaf never reach past its `tasks` best (each pick is the leaf's minimum; to
    /// reach a node beyond them, all of them must have been picked already). Building the
    /// ordered set of 10 nodes rather than 5,000 is what keeps small groups cheap.
    pub(crate) fn finish(&mut self, tasks: usize) {
        self.index.clear();
        let keep = tasks.max(1);
        for branch in &mut self.branches {
            let mut c = std::mem::take(&mut branch.candidates);
            if c.len() > keep {
                c.select_nth_unstable(keep);
                c.truncate(keep);
            }
            branch.members = c.into_iter().collect();
        }
        for b in 1..self.branches.len() {
            let entry = (self.branches[b].service_tasks, self.branches[b].tiebreak, b);
            let parent = self.branches[b].parent;
            self.branches[parent].children.insert(entry);
        }
    }

    /// The best node and its leaf: down the branch with the fewest tasks of the service at
    /// each level, then the best node of that leaf.
    pub(crate) fn pick(&self) -> Option<(usize, NodeKey)> {
        let mut b = ROOT;
        loop {
            let branch = &self.branches[b];
            if let Some(k) = branch.members.first() {
                return Some((b, *k));
            }
            b = branch.children.first()?.2;
        }
    }

    /// After a task of the service was placed on the node `old` names, in `leaf`: the node
    /// moves to `new` (or leaves the tree when it can take no more), and every branch above
    /// it counts one more task.
    pub(crate) fn placed(&mut self, leaf: usize, old: NodeKey, new: Option<NodeKey>) {
        let members = &mut self.branches[leaf].members;
        members.remove(&old);
        if let Some(k) = new {
            members.insert(k);
        }
        // Bottom-up, so each child's emptiness is settled before its parent's entry is redone.
        let mut b = leaf;
        while b != ROOT {
            let parent = self.branches[b].parent;
            let (tasks, tiebreak) = (self.branches[b].service_tasks, self.branches[b].tiebreak);
            self.branches[parent].children.remove(&(tasks, tiebreak, b));
            self.branches[b].service_tasks += 1;
            if !self.branches[b].is_empty() {
                self.branches[parent]
                    .children
                    .insert((tasks + 1, tiebreak, b));
            }
            b = parent;
        }
        self.branches[ROOT].service_tasks += 1;
    }
}

/// FNV-1a: a hash that stays the same across Rust versions and platforms, unlike
/// `DefaultHasher`, so plans replay anywhere.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: spreads FNV's output so that nearby seeds give unrelated orders.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The tiebreak between otherwise equal choices: a pure function of the seed and the name
/// (a node ID or a label value), never of memory layout or map iteration order.
pub(crate) fn tiebreak(seed: u64, name: Option<&str>) -> u64 {
    let h = match name {
        Some(s) => fnv1a(s.as_bytes()),
        // Nodes without the label: distinct from every value's hash in practice.
        None => 0x5bd1_e995_0000_0001,
    };
    mix(mix(seed) ^ h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiebreak_is_stable() {
        // Pinned so a change to the hash (which would change every plan) is deliberate.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(tiebreak(1, Some("n1")), tiebreak(1, Some("n1")));
        assert_ne!(tiebreak(1, Some("n1")), tiebreak(2, Some("n1")));
        assert_ne!(tiebreak(1, Some("n1")), tiebreak(1, Some("n2")));
        assert_ne!(tiebreak(1, None), tiebreak(1, Some("")));
    }

    #[test]
    fn picks_fewest_service_tasks_then_total_then_tiebreak() {
        let mut t = Tree::new(0);
        t.insert(&[], (1, 0, 0, 0), |_| 0);
        t.insert(&[], (0, 5, 9, 1), |_| 0);
        t.insert(&[], (0, 5, 3, 2), |_| 0);
        t.insert(&[], (0, 6, 0, 3), |_| 0);
        t.finish(10);
        assert_eq!(t.pick(), Some((0, (0, 5, 3, 2))));
        t.placed(0, (0, 5, 3, 2), Some((1, 6, 3, 2)));
        assert_eq!(t.pick(), Some((0, (0, 5, 9, 1))));
        t.placed(0, (0, 5, 9, 1), None);
        assert_eq!(t.pick(), Some((0, (0, 6, 0, 3))));
        t.placed(0, (0, 6, 0, 3), None);
        assert_eq!(t.pick(), Some((0, (1, 0, 0, 0))));
        t.placed(0, (1, 0, 0, 0), None);
        t.placed(0, (1, 6, 3, 2), None);
        assert_eq!(t.pick(), None);
    }

    #[test]
    fn keeps_only_as_many_nodes_as_tasks() {
        let mut t = Tree::new(0);
        for i in 0..100 {
            t.insert(&[], (0, 100 - i as u64, 0, i), |_| 0);
        }
        t.finish(3);
        assert_eq!(t.branches[ROOT].members.len(), 3);
        assert_eq!(t.pick(), Some((0, (0, 1, 0, 99))));
    }

    #[test]
    fn spreads_over_label_values_first() {
        // Zone a: two nodes, one already running 2 tasks of the service. Zone b: one empty
        // node. No label: one node with 1 task.
        let mut t = Tree::new(1);
        let tb = |v: Option<&str>| match v {
            Some("a") => 1,
            Some(_) => 2,
            None => 3,
        };
        t.insert(&[Some("a")], (2, 2, 0, 0), tb);
        t.insert(&[Some("a")], (0, 0, 0, 1), tb);
        t.insert(&[Some("b")], (0, 0, 0, 2), tb);
        t.insert(&[None], (1, 1, 0, 3), tb);
        t.finish(10);
        // Branches are numbered in order of creation.
        let (a, b, none) = (1, 2, 3);
        // b (0 tasks) before the unlabelled group (1) before a (2), even though a's node 1
        // is empty.
        assert_eq!(t.pick(), Some((b, (0, 0, 0, 2))));
        t.placed(b, (0, 0, 0, 2), Some((1, 1, 0, 2)));
        // b and the unlabelled group now both have 1; b's tiebreak is smaller.
        assert_eq!(t.pick(), Some((b, (1, 1, 0, 2))));
        t.placed(b, (1, 1, 0, 2), None); // b is full now
        assert_eq!(t.pick(), Some((none, (1, 1, 0, 3))));
        t.placed(none, (1, 1, 0, 3), Some((2, 2, 0, 3)));
        // a and the unlabelled group both have 2: a by tiebreak, its emptiest node.
        assert_eq!(t.pick(), Some((a, (0, 0, 0, 1))));
    }
}

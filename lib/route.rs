//! Routing in the context tree: which link a frame leaves on.
//!
//! Contexts form a tree rooted at the master (id 0). A frame travelling down carries its
//! destination's id; each agent delivers it locally, passes it to the child link the
//! destination lies behind, or drops it. A frame travelling up carries its source's id and
//! goes to the parent, once the child link's [`crate::guard::Guard`] has judged it (a
//! confused or hostile child cannot speak for contexts that are not below it). Routes are
//! learnt when a child link announces a context below it and forgotten, all at once, when
//! that link dies.
//!
//! The table is generic over the link identifier so it stays a pure data structure; its
//! owner maps identifiers to actual senders.

use std::collections::HashMap;
use std::hash::Hash;

use crate::proto::ContextId;

/// Where a frame travelling down goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hop<L> {
    /// It is for this context.
    Local,
    /// Pass it to this child link.
    Down(L),
    /// No route: the destination is not below this context (or has gone).
    Unknown,
}

/// The routing table of one context.
#[derive(Debug, Clone)]
pub(crate) struct Routes<L> {
    me: ContextId,
    below: HashMap<ContextId, L>,
}

impl<L: Clone + Eq + Hash> Routes<L> {
    pub(crate) fn new(me: ContextId) -> Routes<L> {
        Routes {
            me,
            below: HashMap::new(),
        }
    }

    pub(crate) fn me(&self) -> ContextId {
        self.me
    }

    /// Learns this context's id (agents are told it in the master's `Hello`).
    pub(crate) fn set_me(&mut self, me: ContextId) {
        self.me = me;
    }

    /// `ctx` lives behind child link `via`. Refused (false) for this context itself, or a
    /// context already reachable through another link: ids are unique in the tree.
    pub(crate) fn add(&mut self, ctx: ContextId, via: L) -> bool {
        if ctx == self.me {
            return false;
        }
        match self.below.get(&ctx) {
            Some(existing) if *existing != via => false,
            _ => {
                self.below.insert(ctx, via);
                true
            }
        }
    }

    /// Forgets one context (it ended while its link lives on).
    pub(crate) fn remove(&mut self, ctx: ContextId) -> Option<L> {
        self.below.remove(&ctx)
    }

    /// A child link died: forgets and returns every context that was behind it, so their
    /// pending callers can be told instead of waiting forever.
    pub(crate) fn remove_link(&mut self, via: &L) -> Vec<ContextId> {
        let mut lost: Vec<ContextId> = self
            .below
            .iter()
            .filter(|(_, l)| *l == via)
            .map(|(c, _)| *c)
            .collect();
        lost.sort_unstable();
        for c in &lost {
            self.below.remove(c);
        }
        lost
    }

    /// Where a frame for `dst` goes.
    pub(crate) fn down(&self, dst: ContextId) -> Hop<L> {
        if dst == self.me {
            return Hop::Local;
        }
        match self.below.get(&dst) {
            Some(l) => Hop::Down(l.clone()),
            None => Hop::Unknown,
        }
    }

    /// Number of contexts below this one.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.below.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.below.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree: this context is 1, with child links "a" (leading to 2 and its child 4)
    /// and "b" (leading to 3).
    fn table() -> Routes<&'static str> {
        let mut r = Routes::new(1);
        assert!(r.add(2, "a"));
        assert!(r.add(4, "a"));
        assert!(r.add(3, "b"));
        r
    }

    #[test]
    fn frames_go_down_the_right_link() {
        let r = table();
        assert_eq!(r.down(1), Hop::Local);
        assert_eq!(r.down(2), Hop::Down("a"));
        assert_eq!(r.down(4), Hop::Down("a"));
        assert_eq!(r.down(3), Hop::Down("b"));
        assert_eq!(r.down(0), Hop::Unknown, "the master is never below");
        assert_eq!(r.down(9), Hop::Unknown);
    }

    #[test]
    fn ids_are_unique_in_the_tree() {
        let mut r = table();
        assert!(!r.add(2, "b"), "2 is already behind a");
        assert!(r.add(2, "a"), "re-announcing the same route is harmless");
        assert!(!r.add(1, "a"), "nobody is routed to itself");
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_dead_link_takes_its_whole_subtree() {
        let mut r = table();
        assert_eq!(r.remove_link(&"a"), vec![2, 4]);
        assert_eq!(r.down(4), Hop::Unknown);
        assert_eq!(r.down(3), Hop::Down("b"));
        assert_eq!(r.remove(3), Some("b"));
        assert!(r.is_empty());
    }
}

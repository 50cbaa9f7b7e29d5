//! H2: the configuration epoch only grows; every active primary came from the previous
//! active view; configuration replicas agree on the view of every epoch (Vertical Paxos II:
//! a new configuration is activated only from the old one's state). The Raft group's own
//! S1, S2 and S5 run through the shared checkers.

use std::collections::BTreeMap;

use chorus_core::NodeId;
use chorus_hybrid::View;

#[derive(Debug, Default)]
pub(crate) struct ConfigurationHistory {
    /// The view each epoch had (its active form once it was active).
    views: BTreeMap<u64, View>,
    /// The epoch each configuration node applied last (reset by a restart, which replays).
    applied: BTreeMap<NodeId, u64>,
    /// The last active view seen, and whether its successor was checked.
    last_active: Option<View>,
}

impl ConfigurationHistory {
    /// Configuration node `node` applied a command; the view is now `view`.
    pub(crate) fn observe(&mut self, node: NodeId, view: &View) -> Vec<String> {
        let mut found = Vec::new();
        let epoch = view.epoch.0;
        let before = self.applied.insert(node, epoch).unwrap_or(0);
        if epoch < before {
            found.push(format!("{node} went from epoch {before} back to {epoch}"));
        }
        match self.views.get(&epoch) {
            Some(known) if known.primary != view.primary || known.backups != view.backups => {
                found.push(format!("{node} has {view:?} where another had {known:?}"));
            }
            Some(known) if known.active || !view.active => {}
            _ => {
                if view.active && epoch > 0 {
                    if let Some(last) = &self.last_active {
                        if view.epoch > last.epoch
                            && !view.primary.is_some_and(|p| last.is_member(p))
                        {
                            found.push(format!(
                                "active {view:?} has a primary outside the last active {last:?}"
                            ));
                        }
                    }
                    if self
                        .last_active
                        .as_ref()
                        .is_none_or(|last| last.epoch < view.epoch)
                    {
                        self.last_active = Some(view.clone());
                    }
                }
                self.views.insert(epoch, view.clone());
            }
        }
        found
    }

    /// A configuration node restarted: it replays from the start.
    pub(crate) fn observe_restart(&mut self, node: NodeId) {
        self.applied.remove(&node);
    }

    /// Whether `view` is the newest active view, not seen active before.
    pub(crate) fn newly_active(&self, view: &View) -> bool {
        view.active
            && self
                .views
                .get(&view.epoch.0)
                .is_none_or(|known| !known.active)
    }
}

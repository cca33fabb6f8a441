//! A [`MultiHost`] on a real etcd cluster ([`Options::etcd_members`](super::Options::etcd_members)): the
//! members run in the control namespace, next to the scheduler.

use std::time::Duration;

use super::MultiHost;
use crate::etcd_cluster::EtcdCluster;

/// How long a restarted etcd cluster may take to elect a leader.
const LEADER_DEADLINE: Duration = Duration::from_secs(60);

impl MultiHost {
    pub(super) fn start_etcd_cluster(&mut self) {
        let cluster = EtcdCluster::start(self.opts.etcd_members, &self.root, Some(self.control()))
            .unwrap_or_else(|e| panic!("starting the etcd cluster: {e:#}"));
        self.store_url = cluster.endpoints();
        self.etcd = Some(cluster);
    }

    /// The etcd cluster (only with [`Options::etcd_members`](super::Options::etcd_members)).
    ///
    /// # Panics
    ///
    /// On a harness that runs the embedded store.
    pub fn etcd(&mut self) -> &mut EtcdCluster {
        self.etcd
            .as_mut()
            .expect("the harness runs a real etcd cluster (Options::etcd_members)")
    }

    /// The index of the leading etcd member, if one leads.
    pub fn etcd_leader(&mut self) -> Option<usize> {
        let ns = self.control.as_ref();
        self.etcd.as_mut().and_then(|e| e.leader(ns))
    }

    /// Starts etcd member `i` again after a stop or kill.
    ///
    /// # Panics
    ///
    /// When it cannot be spawned.
    pub fn etcd_restart(&mut self, i: usize) {
        let ns = self.control.as_ref();
        if let Some(e) = self.etcd.as_mut() {
            e.restart(i, ns)
                .unwrap_or_else(|err| panic!("restarting etcd member {i}: {err:#}"));
        }
    }

    /// Waits until an etcd member leads; returns its index.
    ///
    /// # Panics
    ///
    /// When none leads within a minute.
    pub fn etcd_wait_leader(&mut self) -> usize {
        let ns = self.control.as_ref();
        let e = self.etcd.as_mut().expect("a real etcd cluster");
        e.wait_leader(ns, LEADER_DEADLINE)
            .unwrap_or_else(|err| panic!("{err:#}"))
    }
}

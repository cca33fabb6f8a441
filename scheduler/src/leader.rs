//! Scheduler replicas: any number of `drover scheduler` processes on one
//! store, one of them leading through [`drover_store::election`].
//!
//! Each replica serves the gRPC API from the start, behind a [`Gate`]:
//! until it leads it refuses every Drover call with the leader's address
//! (learnt by observing the leader key, whose value is each candidate's
//! advertised address). It campaigns; once it wins it fences every write
//! of its [`Core`] on its term ([`crate::cluster::Cluster::fence_writes`]),
//! gives every node a fresh grace period to reconnect, opens the gate and
//! starts the background loops (reconcile, timers, periodic launches,
//! deployments, the DNS relay).
//!
//! Losing the term (the leader key deleted or replaced, the lease lapsed,
//! or the watch on the key broken: in doubt, step down) closes the gate,
//! stops the loops and ends [`serve_elected`] with
//! [`LeaderError::Lost`], dropping every agent stream; `drover scheduler`
//! then serves again as a follower with a fresh [`Core`] and campaigns
//! again (so an etcd outage longer than the lease ends the term, and the
//! replicas elect a leader again once etcd is back, with no supervisor).
//! A core serves at most one term: its in-memory state (connected agents,
//! timers) belongs to that term. A write that a deposed
//! leader still attempts before it notices is refused by the fence.
//!
//! Shutting down while leading resigns (revokes the lease), so another
//! replica takes over at once rather than after the lease's TTL; a
//! replica restarted after a crash removes the key its earlier run left
//! (the same advertised address) instead of waiting for it to lapse.
//! Advertised addresses must therefore be unique among the replicas.

use std::sync::Arc;
use std::time::Duration;

use drover_store::election::{Election, ElectionError, Leadership};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::gate::{Gate, Role};
use crate::service::{serve_api, spawn_loops, ServeError};

/// The leader lease's TTL when none is given: how long the replicas wait
/// for a leader that stopped renewing (killed, cut off) before one of them
/// takes over. It outlasts an etcd leader election (about 1 s by default),
/// so one does not depose the scheduler, and stays below the default node
/// grace (10 s), so agents reconnect to the new leader before any of their
/// nodes could be declared down.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(5);

/// How long a failed campaign (the store unreachable) waits to try again.
const CAMPAIGN_RETRY: Duration = Duration::from_secs(1);

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct Candidacy {
    /// The address clients and agents reach this replica at (`HOST:PORT`):
    /// the leader key's value while it leads.
    pub advertise: String,
    /// The leader lease's TTL (whole seconds in etcd, rounded up).
    pub ttl: Duration,
}

impl Candidacy {
    /// The candidacy of a lone scheduler (`drover dev`) bound to `addr`,
    /// with the default TTL.
    pub fn single(addr: std::net::SocketAddr) -> Candidacy {
        Candidacy {
            advertise: addr.to_string(),
            ttl: DEFAULT_LEADER_TTL,
        }
    }

    /// The lease TTL in whole seconds, rounded up, at least 1.
    pub fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }
}

/// How a replica stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The term ended while leading: the process must exit.
    #[error("scheduler {advertise} lost the leadership (term {fence}); it stopped acting")]
    Lost {
        /// This replica's address.
        advertise: String,
        /// The fencing token of the term that ended.
        fence: i64,
    },
    /// etcd refused to let this replica watch the leader key.
    #[error("scheduler {advertise}: {source}")]
    Election {
        /// This replica's address.
        advertise: String,
        /// Why.
        #[source]
        source: ElectionError,
    },
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Serves `core`'s API on `listener` as one replica of the election until
/// `shutdown`; see the module docs. Returns `Ok` on shutdown,
/// [`LeaderError::Lost`] when a term ended otherwise.
pub async fn serve_elected(
    core: Arc<Core>,
    candidacy: Candidacy,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), LeaderError> {
    let (role, _) = watch::channel(Role::Following { leader: None });
    serve_elected_reporting(core, candidacy, listener, shutdown, tls, Arc::new(role)).await
}

/// [`serve_elected`], publishing this replica's [`Role`] on `role` as it
/// changes (it starts as a follower with no leader known), so that the
/// caller can tell when the election has an outcome (e.g. to announce
/// that the replica is ready only then). `role` may outlive one term and
/// serve the next.
pub async fn serve_elected_reporting(
    core: Arc<Core>,
    candidacy: Candidacy,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<tonic::transport::ServerTlsConfig>,
    role: Arc<watch::Sender<Role>>,
) -> Result<(), LeaderError> {
    role.send_replace(Role::Following { leader: None });
    let gate = role.subscribe();
    let election = Election::new(
        core.store().clone(),
        &candidacy.advertise,
        candidacy.ttl_secs(),
    );
    // A key holding this replica's own address was left by an earlier run
    // of it (killed, restarted within the lease's TTL): no need to wait.
    if let Err(error) = election.clear_own_stale().await {
        tracing::warn!(%error, "cannot check the leader key for one of an earlier run");
    }
    let mut server = tokio::spawn(serve_api(
        core.clone(),
        listener,
        shutdown.clone(),
        tls,
        Gate::new(gate),
    ));
    // Until the store answers (etcd down at start, or after a lost term)
    // the gate refuses with no leader named.
    let observed = tokio::select! {
        o = observe(&election, &shutdown) => o,
        ended = &mut server => return server_ended(ended),
    };
    let observed = match observed {
        Some(Ok(observed)) => observed,
        Some(Err(source)) => {
            shutdown.cancel();
            return Err(LeaderError::Election {
                advertise: candidacy.advertise.clone(),
                source,
            });
        }
        None => return server_ended(server.await),
    };
    tokio::spawn(follow_leader(observed, role.clone(), shutdown.clone()));
    tracing::info!(advertise = %candidacy.advertise, ttl_s = candidacy.ttl_secs(), "campaigning for the scheduler leadership");
    let leadership = tokio::select! {
        won = campaign(&election, &shutdown) => won,
        ended = &mut server => return server_ended(ended),
    };
    let Some(leadership) = leadership else {
        return server_ended(server.await);
    };
    let fence = leadership.fence();
    core.cluster().fence_writes(fence.clone());
    core.registry().restart();
    let term = shutdown.child_token();
    spawn_loops(&core, &term);
    role.send_replace(Role::Leading);
    tracing::info!(advertise = %candidacy.advertise, fence = fence.revision, "leading: serving the API and the agents");
    let mut lost = leadership.lost();
    let lost = async move {
        // The guard the wait returns is not held across the awaits below.
        let _ = lost.wait_for(|l| *l).await.map(|_| ());
    };
    // `None`: the term was lost; `Some(None)`: shut down; `Some(Some(_))`:
    // the server ended.
    let stopped = tokio::select! {
        biased;
        () = shutdown.cancelled() => Some(None),
        () = lost => None,
        ended = &mut server => Some(Some(ended)),
    };
    if let Some(ended) = stopped {
        // Hand over at once rather than after the lease's TTL.
        term.cancel();
        role.send_replace(Role::Following { leader: None });
        if let Err(error) = leadership.resign().await {
            tracing::warn!(%error, "cannot resign the leadership; it lapses with its lease");
        }
        tracing::info!(advertise = %candidacy.advertise, fence = fence.revision, "resigned the leadership");
        return server_ended(match ended {
            Some(ended) => ended,
            None => server.await,
        });
    }
    role.send_replace(Role::Following { leader: None });
    term.cancel();
    shutdown.cancel();
    server.abort();
    Err(term_lost(&core, candidacy.advertise, fence.revision))
}

/// Ends a lost term's agent streams at once (a graceful drain would keep
/// them on this term's core: they register with whoever leads next) and
/// says so.
fn term_lost(core: &Core, advertise: String, fence: i64) -> LeaderError {
    core.registry().close_all(&tonic::Status::unavailable(
        "this scheduler's leader term ended; reconnect",
    ));
    tracing::error!(%advertise, fence, "leadership lost: stopped acting and ended the agents' streams");
    LeaderError::Lost { advertise, fence }
}

/// Campaigns until this replica leads; `None` on shutdown. A store that
/// cannot be reached is tried again.
async fn campaign(election: &Election, shutdown: &CancellationToken) -> Option<Leadership> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            won = election.campaign() => match won {
                Ok(leadership) => return Some(leadership),
                Err(error) => tracing::warn!(%error, retry_in_ms = CAMPAIGN_RETRY.as_millis() as u64, "campaign failed"),
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(CAMPAIGN_RETRY) => {}
        }
    }
}

/// Watches the leader key, trying again while the store cannot be
/// reached; `None` on shutdown, an error when etcd refuses this replica
/// (its credentials), which trying again does not mend.
async fn observe(
    election: &Election,
    shutdown: &CancellationToken,
) -> Option<Result<watch::Receiver<Option<drover_store::election::Leader>>, ElectionError>> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            observed = election.observe() => match observed {
                Ok(observed) => return Some(Ok(observed)),
                Err(error) if refused(&error) => return Some(Err(error)),
                Err(error) => tracing::warn!(%error, retry_in_ms = CAMPAIGN_RETRY.as_millis() as u64, "cannot watch the leader key"),
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(CAMPAIGN_RETRY) => {}
        }
    }
}

/// Whether etcd refused the request (permissions, authentication) rather
/// than failed to answer it.
fn refused(error: &ElectionError) -> bool {
    let source = match error {
        ElectionError::Etcd { source, .. } => source,
        ElectionError::Store {
            source: drover_store::StoreError::Etcd { source, .. },
            ..
        } => source,
        _ => return false,
    };
    matches!(
        source,
        etcd_client::Error::GRpcStatus(s)
            if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated)
    )
}

/// Keeps a follower's role naming the leader the store shows.
async fn follow_leader(
    mut observed: watch::Receiver<Option<drover_store::election::Leader>>,
    role: Arc<watch::Sender<Role>>,
    shutdown: CancellationToken,
) {
    loop {
        let leader = observed.borrow_and_update().as_ref().map(|l| l.id.clone());
        role.send_if_modified(|r| match r {
            Role::Leading => false,
            Role::Following { leader: known } if *known == leader => false,
            Role::Following { .. } => {
                tracing::info!(leader = leader.as_deref().unwrap_or("none"), "following");
                *r = Role::Following { leader };
                true
            }
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = observed.changed() => if changed.is_err() { return },
        }
    }
}

fn server_ended(
    ended: Result<Result<(), ServeError>, tokio::task::JoinError>,
) -> Result<(), LeaderError> {
    match ended {
        Ok(result) => Ok(result?),
        Err(error) => {
            tracing::error!(%error, "the gRPC server task failed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_rounds_up_to_whole_seconds() {
        let c = |ms| Candidacy {
            advertise: "a:1".into(),
            ttl: Duration::from_millis(ms),
        };
        assert_eq!(c(2000).ttl_secs(), 2);
        assert_eq!(c(2001).ttl_secs(), 3);
        assert_eq!(c(10).ttl_secs(), 1);
    }
}

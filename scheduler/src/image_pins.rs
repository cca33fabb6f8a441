//! A registry image's tag resolved to a digest once per deployment.
//!
//! A job that names an image by tag (`reg/web:1.4`) must run one image in
//! every instance, restart and replacement of a deployment, even if the
//! tag moves on the registry meanwhile. Nodes hold the registry access and
//! the credentials, so a node resolves the tag (the scheduler never talks
//! to registries), and the scheduler makes the first answer the
//! deployment's:
//!
//! 1. An agent starts a task without a pin, resolves the tag and reports
//!    the pinned reference in the task's `image_digest`.
//! 2. [`Recorder::record`] writes it under
//!    `image-pins/<job>/<group>/<instance hash>/<task>` with a
//!    create-if-absent transaction: the first report wins, later ones
//!    (other nodes, restarts) change nothing.
//! 3. Every assignment of an allocation of that job version carries the
//!    group's pins (`Assignment.image_pins`, [`Pins::for_alloc`]); the
//!    agent then pulls the pinned digest instead of resolving the tag, for
//!    new instances, replacements on other nodes and restarts alike.
//!
//! What counts as one deployment is the group's *instances* (its tasks
//! and restart policy, what [`crate::reconcile::same_instances`]
//! compares), hashed into the key: a new job version that only changes
//! the count keeps the running allocations, so it keeps their pin too (a
//! scale-up runs the digest the others run); a version that changes the
//! tasks is a new deployment and resolves the tag again. Stopping a job
//! forgets its pins ([`forget_job`]), so running it again resolves anew.
//!
//! Allocations started side by side before the first report reaches the
//! scheduler resolve the tag each on their own; if the tag moves within
//! those seconds, one may start on another digest. Its report then
//! disagrees with the pin: [`Recorder::record`] says so (a warning naming
//! both digests), the session sends its node the pin at once, and the
//! agent restarts the task on the deployment's digest (`Action::Repin`),
//! so that every instance ends up running the one image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use drover_model::image_ref::ImageRef;
use drover_proto::v1 as pb;
use drover_store::client::encode;
use drover_store::{Committed, Guard, Kind, Store, StoreError, Write};
use serde::{Deserialize, Serialize};

use crate::deploy::record::version_key;
use crate::deploy::JobVersion;
use crate::job::{GroupSpec, RootfsSpec};
use crate::state::{AllocRecord, DesiredState, JobRecord, JobStatus};

/// Entries [`Recorder`] remembers before it starts over.
const MEMO_LIMIT: usize = 100_000;

/// One pinned image, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePin {
    /// The image as the job names it (`reg/web:1.4`).
    pub image: String,
    /// It pinned to the digest the first start resolved
    /// (`reg/web@sha256:...`).
    pub pinned: String,
    /// The job version whose allocation resolved it.
    pub job_version: u64,
    /// That allocation.
    pub alloc_id: String,
    /// Its node.
    pub node_id: String,
}

/// The hash of a group's instances: its tasks and restart policy, as
/// JSON (field order is the struct's, maps are sorted), FNV-1a 64. Stable
/// across schedulers of one release; a release that changes the spec's
/// shape resolves tags again at the next deployment, which is harmless.
pub fn instance_hash(group: &GroupSpec) -> String {
    let bytes = serde_json::to_vec(&(&group.tasks, &group.restart)).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The store name of the pin of task `task` of `group` of `job`.
pub fn pin_name(job: &str, group: &GroupSpec, task: &str) -> String {
    format!("{job}/{}/{}/{task}", group.name, instance_hash(group))
}

/// The job a pin's store name belongs to (job names may hold `/`).
fn job_of(name: &str) -> Option<&str> {
    let mut parts = name.rsplitn(4, '/');
    let (_task, _hash, _group) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next()
}

/// Every pin, by store name, as of one read.
#[derive(Debug, Default, Clone)]
pub struct Pins(HashMap<String, String>);

impl Pins {
    /// Reads every pin.
    pub async fn read(store: &Store) -> Result<Pins, StoreError> {
        let listing = store.list_prefix::<ImagePin>(Kind::ImagePin, "").await?;
        Ok(Pins(
            listing
                .items
                .into_iter()
                .map(|v| (v.name, v.value.pinned))
                .collect(),
        ))
    }

    /// The pins an assignment of `alloc` carries, by task: `group` is its
    /// group as of the job version that placed it (`alloc.job_version`;
    /// the caller looks an older one up, see [`Pins::older_specs`]), whose
    /// instances name the deployment. An allocation kept through a
    /// count-only change gets its deployment's pin; one of a version with
    /// other instances gets that version's, never the current one's.
    pub fn for_alloc(&self, alloc: &AllocRecord, group: &GroupSpec) -> BTreeMap<String, String> {
        if self.0.is_empty() {
            return BTreeMap::new();
        }
        group
            .tasks
            .iter()
            .filter(|t| matches!(t.rootfs, RootfsSpec::Image { .. }))
            .filter_map(|t| {
                let pinned = self.0.get(&pin_name(&alloc.job, group, &t.name))?;
                Some((t.name.clone(), pinned.clone()))
            })
            .collect()
    }

    /// The specs of the older job versions `allocs` were placed by, for
    /// [`Pins::for_alloc`]: only those of jobs whose current spec names a
    /// registry image, and none when there is no pin at all (one read per
    /// version; a version no longer kept is left out, its allocations
    /// then carry no pin and restart from the digest their node recorded).
    pub async fn older_specs(
        &self,
        store: &Store,
        allocs: &[AllocRecord],
        jobs: &BTreeMap<String, JobRecord>,
    ) -> Result<HashMap<(String, u64), crate::job::JobSpec>, StoreError> {
        let mut out = HashMap::new();
        if self.0.is_empty() {
            return Ok(out);
        }
        let wanted: HashSet<(String, u64)> = allocs
            .iter()
            .filter(|a| {
                jobs.get(&a.job).is_some_and(|j| {
                    j.version != a.job_version
                        && j.spec.groups.iter().any(|g| {
                            g.tasks
                                .iter()
                                .any(|t| matches!(t.rootfs, RootfsSpec::Image { .. }))
                        })
                })
            })
            .map(|a| (a.job.clone(), a.job_version))
            .collect();
        for (job, version) in wanted {
            let key = version_key(&job, version);
            if let Some(v) = store.get::<JobVersion>(Kind::JobVersion, &key).await? {
                out.insert((job, version), v.value.spec);
            }
        }
        Ok(out)
    }
}

/// Records the digests agents report, first one wins; remembers what it
/// has seen so that a report repeating it costs no store request.
#[derive(Debug)]
pub struct Recorder {
    seen: Mutex<HashSet<String>>,
    /// Recordings under way at once (each reads the allocation and its
    /// job): sessions record off their receive loop
    /// ([`Recorder::is_news`]), this bounds what a burst of first reports
    /// asks of the store.
    running: tokio::sync::Semaphore,
}

/// Recordings [`Recorder::record`] runs at once.
const RECORDING_LIMIT: usize = 32;

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            seen: Mutex::default(),
            running: tokio::sync::Semaphore::new(RECORDING_LIMIT),
        }
    }
}

impl Recorder {
    /// Whether `st` reports a digest not recorded yet (so that a session
    /// starts a recording only for those).
    pub fn is_news(&self, st: &pb::AllocStatus) -> bool {
        st.tasks.iter().any(|t| {
            !t.image_digest.is_empty()
                && !self.has(&format!("{}/{}/{}", st.alloc_id, t.name, t.image_digest))
        })
    }

    /// Pins the digests `st` reports for tasks of node `node_id` whose
    /// deployment has none yet. Errors are logged: a pin not written now
    /// is written at the next report that carries the digest. Returns
    /// whether a task runs another digest than its deployment's pin (its
    /// node is then to be sent the pin again, and restarts the task on
    /// it: `drover_agent`'s `Action::Repin`).
    pub async fn record(&self, store: &Store, node_id: &str, st: &pb::AllocStatus) -> bool {
        // Never closed: acquiring cannot fail.
        let _turn = self.running.acquire().await.ok();
        let mut drifted = false;
        for t in st.tasks.iter().filter(|t| !t.image_digest.is_empty()) {
            let memo = format!("{}/{}/{}", st.alloc_id, t.name, t.image_digest);
            if self.has(&memo) {
                continue;
            }
            match self
                .record_task(store, node_id, &st.alloc_id, &t.name, &t.image_digest)
                .await
            {
                Ok(agrees) => {
                    drifted |= !agrees;
                    self.remember(memo);
                }
                Err(error) => {
                    tracing::warn!(node_id, alloc_id = %st.alloc_id, task = %t.name, %error, "cannot record the image digest for the deployment");
                }
            }
        }
        drifted
    }

    fn has(&self, memo: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(memo)
    }

    fn remember(&self, memo: String) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MEMO_LIMIT {
            seen.clear();
        }
        seen.insert(memo);
    }

    async fn record_task(
        &self,
        store: &Store,
        node_id: &str,
        alloc_id: &str,
        task: &str,
        reported: &str,
    ) -> Result<bool, StoreError> {
        let Some(alloc) = store.get::<AllocRecord>(Kind::Alloc, alloc_id).await? else {
            return Ok(true);
        };
        let alloc = alloc.value;
        let Some(job) = store.get::<JobRecord>(Kind::Job, &alloc.job).await? else {
            return Ok(true);
        };
        // A stopped job's pins are gone (forget_job): its last reports
        // must not bring them back.
        if job.value.status != JobStatus::Running || alloc.desired != DesiredState::Run {
            return Ok(true);
        }
        let spec = if job.value.version == alloc.job_version {
            job.value.spec
        } else {
            let key = version_key(&alloc.job, alloc.job_version);
            match store.get::<JobVersion>(Kind::JobVersion, &key).await? {
                Some(v) => v.value.spec,
                None => return Ok(true),
            }
        };
        let Some(group) = spec.group(&alloc.group) else {
            return Ok(true);
        };
        let Some(pin) = pin_for(&alloc, group, task, reported, node_id) else {
            return Ok(true);
        };
        let name = pin_name(&alloc.job, group, task);
        let write = Write::Put {
            kind: Kind::ImagePin,
            value: encode(&name, &pin)?,
            name: name.clone(),
        };
        let absent = Guard {
            kind: Kind::ImagePin,
            name: name.clone(),
            mod_revision: 0,
        };
        match store.commit(&[absent], &[write]).await? {
            Committed::Yes(_) => {
                tracing::info!(alloc_id, job = %alloc.job, group = %alloc.group, task, image = %pin.image, pinned = %pin.pinned, "image tag pinned for the deployment");
            }
            Committed::Conflict => {
                let held = store.get::<ImagePin>(Kind::ImagePin, &name).await?;
                if let Some(held) = held.filter(|h| h.value.pinned != pin.pinned) {
                    tracing::warn!(alloc_id, node_id, task, runs = %pin.pinned, deployment = %held.value.pinned, "allocation resolved the tag to another digest than its deployment's (the tag moved while both started); its node restarts it on the deployment's digest");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// The pin `reported` makes for `task` of `alloc`, when the task names a
/// registry image by tag and `reported` is that image pinned.
fn pin_for(
    alloc: &AllocRecord,
    group: &GroupSpec,
    task: &str,
    reported: &str,
    node_id: &str,
) -> Option<ImagePin> {
    let spec = group.tasks.iter().find(|t| t.name == task)?;
    let RootfsSpec::Image { image } = &spec.rootfs else {
        return None;
    };
    let named = ImageRef::parse(image).ok()?;
    let pinned = ImageRef::parse(reported).ok()?;
    if named.digest.is_some() || pinned.digest.is_none() || named.name() != pinned.name() {
        return None;
    }
    Some(ImagePin {
        image: image.clone(),
        pinned: reported.to_owned(),
        job_version: alloc.job_version,
        alloc_id: alloc.id.clone(),
        node_id: node_id.to_owned(),
    })
}

/// Deletes job `job`'s pins (it was stopped: running it again is a new
/// deployment).
pub async fn forget_job(store: &Store, job: &str) -> Result<usize, StoreError> {
    let listing = store
        .list_prefix::<ImagePin>(Kind::ImagePin, &format!("{job}/"))
        .await?;
    let writes: Vec<Write> = listing
        .items
        .into_iter()
        .filter(|v| job_of(&v.name) == Some(job))
        .map(|v| Write::Delete {
            kind: Kind::ImagePin,
            name: v.name,
        })
        .collect();
    if !writes.is_empty() {
        store.commit(&[], &writes).await?;
    }
    Ok(writes.len())
}

#[cfg(test)]
#[path = "image_pins_tests.rs"]
mod tests;

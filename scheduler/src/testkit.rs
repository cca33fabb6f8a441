//! Test fixtures shared by the crate's unit tests: records built from a
//! few fields, the rest defaulted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::job::{JobSpec, Resources};
use crate::state::{AllocRecord, AllocStatus, DesiredState, NodeRecord, NodeStatus};

/// Job `j` of `kind` with one group `g` of `count` instances of one task
/// `t` running `command`, as a user would write it.
pub fn job(kind: &str, count: u32, command: &str) -> JobSpec {
    let text = format!(
        "name = \"j\"\nkind = \"{kind}\"\n[[group]]\nname = \"g\"\ncount = {count}\n\
         [[group.task]]\nname = \"t\"\ncommand = [\"{command}\"]\n"
    );
    JobSpec::try_from(&crate::jobfile::parse("j.toml", &text).unwrap()).unwrap()
}

/// Instance `index` of job `j` group `g` on `node_id`, desired to run.
pub fn alloc(id: &str, index: u32, node_id: &str, status: AllocStatus) -> AllocRecord {
    AllocRecord {
        id: id.into(),
        name: format!("j.g[{index}]"),
        job: "j".into(),
        group: "g".into(),
        index,
        node_id: node_id.into(),
        desired: DesiredState::Run,
        status,
        tasks: Vec::new(),
        job_version: 1,
        resources: Resources::default(),
        created_unix_ms: 0,
        modified_unix_ms: 0,
        ip: String::new(),
        checks: Vec::new(),
        reschedule: Default::default(),
    }
}

/// A node with 1 core and 1 GiB at `address`.
pub fn node(id: &str, address: &str, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        hostname: id.into(),
        address: address.into(),
        status,
        draining: false,
        resources: Resources {
            cpu_millis: 1000,
            memory_mb: 1024,
        },
        attributes: Default::default(),
        meta: Default::default(),
        last_seen_unix_ms: 0,
        agent_version: String::new(),
        subnet: None,
    }
}

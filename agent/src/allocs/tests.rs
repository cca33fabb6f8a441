use std::path::PathBuf;

use super::*;
use crate::assignment::{AllocStatus, Allocation, DesiredState, Group, NetworkMode, RestartPolicy};

fn allocs(allow_host: bool) -> (tempfile::TempDir, Allocs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(
        dir.path().join("allocs"),
        PathBuf::from("/nonexistent/drover"),
    );
    (dir, Allocs::new(Arc::new(rt)).with_host_network(allow_host))
}

fn group(network: NetworkMode) -> Group {
    Group {
        name: "web".into(),
        tasks: Vec::new(),
        restart: RestartPolicy::default(),
        network,
        services: Vec::new(),
        stop_after_disconnect: None,
    }
}

fn alloc() -> Allocation {
    Allocation {
        id: "a1".into(),
        name: "j.web[0]".into(),
        job: "j".into(),
        group: "web".into(),
        index: 0,
        desired: DesiredState::Run,
        status: AllocStatus::Pending,
    }
}

#[tokio::test]
async fn host_network_needs_the_node_policy() {
    let (_d, refused) = allocs(false);
    let err = refused
        .network_for(&alloc(), &group(NetworkMode::Host), true)
        .await
        .expect_err("refused");
    assert!(err.contains("allow_host_network"), "{err}");
    let (_d, allowed) = allocs(true);
    let net = allowed
        .network_for(&alloc(), &group(NetworkMode::Host), true)
        .await
        .expect("allowed");
    assert_eq!(net.mode, NetworkMode::Host);
    assert_eq!(net.task.netns, None);
}

#[tokio::test]
async fn without_node_networking_a_bridged_allocation_is_refused_with_the_reason() {
    let (_d, mut a) = allocs(false);
    a.set_network(Err("no subnet: pass --subnet".into()));
    let err = a
        .network_for(&alloc(), &group(NetworkMode::Bridge), true)
        .await
        .expect_err("refused");
    assert!(err.contains("pass --subnet"), "{err}");
}

#[test]
fn a_task_is_named_or_the_only_one() {
    let (_d, a) = allocs(false);
    let err = a.resolve_task("a1", "").expect_err("no tasks");
    assert!(err.to_string().contains("no tasks on this node"), "{err}");
}

//! Generates the gRPC code for Drover's API and the etcd API subset.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let drover = [
        "drover/v1/job.proto",
        "drover/v1/node.proto",
        "drover/v1/alloc.proto",
        "drover/v1/agent.proto",
        "drover/v1/deployment.proto",
        "drover/v1/audit.proto",
        "drover/v1/version.proto",
        "drover/v1/event.proto",
    ];
    // No generated `connect` constructors: `AgentService.Connect` would clash
    // with them, and callers build their own `Channel` anyway.
    tonic_prost_build::configure()
        .build_transport(false)
        // Sorted: an assignment's encoding (which the scheduler fingerprints
        // to send only what changed) must not depend on hash order.
        .btree_map(".drover.v1.Assignment.image_pins")
        .file_descriptor_set_path(out.join("drover_descriptor.bin"))
        .compile_protos(&drover, &["."])?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("etcd_descriptor.bin"))
        .compile_protos(&["etcd/kv.proto", "etcd/rpc.proto"], &["etcd"])?;
    for f in drover {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=etcd");
    Ok(())
}

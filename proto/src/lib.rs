//! Generated gRPC types. Protobuf stops here: every other crate converts
//! these into its own validated domain types at its edge.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Drover's own API, `proto/drover/v1/*.proto`.
pub mod v1 {
    tonic::include_proto!("drover.v1");
}

/// The subset of etcd's v3 API that Drover's embedded store serves,
/// wire-compatible with etcd (same packages, services and field numbers).
pub mod etcd {
    /// `mvccpb`: key-value records and watch events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// `etcdserverpb`: the KV, Watch, Lease and Maintenance services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// Encoded `FileDescriptorSet` of the etcd API subset, for gRPC server
/// reflection on the embedded store.
pub const ETCD_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("etcd_descriptor");

/// Encoded `FileDescriptorSet` of Drover's API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("drover_descriptor");

/// Largest gRPC message the scheduler's API decodes, and that Drover's
/// clients (the CLI) accept in an answer: 16 MiB, four times tonic's
/// default of 4 MiB. A job is bounded far below it by the state store
/// (1.5 MiB, etcd's `--max-request-bytes`); the margin lets the scheduler
/// read a job that is too large and answer how large it is and what the
/// limit is, instead of a bare transport error. Answers such as a job's
/// status with its 10,000 allocations need more than 4 MiB too.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

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

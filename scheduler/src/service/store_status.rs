//! What a client is told when the scheduler cannot use etcd: that etcd is
//! the problem, what failed, and what to check, without the transport's
//! debug dump.

use drover_store::StoreError;
use tonic::Status;

/// `UNAVAILABLE`, naming etcd and the failed operation.
pub(super) fn store_unavailable(e: &StoreError) -> Status {
    let detail = match e {
        StoreError::Etcd { op, key, source } => format!("{op} on {key:?}: {}", cause(source)),
        StoreError::Connect { endpoints, source } => {
            format!("connecting to {endpoints}: {}", cause(source))
        }
        other => other.to_string(),
    };
    Status::unavailable(format!(
        "etcd, which holds the cluster state, failed the scheduler's request ({detail}); \
         check the etcd members (etcdctl endpoint health) and try again"
    ))
}

/// The short cause of an etcd client error: a gRPC status's message, or
/// the error itself.
fn cause(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) if s.message().contains("connect error") => {
            format!("no etcd member reachable: {}", s.message())
        }
        etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_etcd_and_the_operation_without_the_debug_dump() {
        let e = StoreError::Etcd {
            op: "get",
            key: "/drover/jobs/web".into(),
            source: etcd_client::Error::GRpcStatus(Status::unavailable("tcp connect error")),
        };
        let s = store_unavailable(&e);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        let m = s.message();
        assert!(m.starts_with("etcd, which holds the cluster state"), "{m}");
        assert!(
            m.contains("get on \"/drover/jobs/web\": no etcd member reachable"),
            "{m}"
        );
        assert!(!m.contains("source:"), "{m}");
    }
}

//! How large a job may be, checked before it is planned: its record must
//! fit in one request to the state store (etcd's `--max-request-bytes`,
//! 1.5 MiB by default, and the embedded store's limit), less what the rest
//! of the request takes. A job over it is refused naming its size and the
//! limit, instead of failing later in the store or the transport.

use super::batch::{OpSize, STORE_LIMITS};
use super::ClusterError;
use crate::job::JobSpec;
use crate::placement::failures::thousands;
use crate::transitions;

/// Most bytes one record (key, value and framing) may take in a store
/// request.
pub const MAX_RECORD_BYTES: usize = STORE_LIMITS.max_bytes;

/// Refuses job `name` of `bytes` (as submitted, on the wire) when it cannot
/// fit the store whatever its stored form: cheap, before validation.
pub fn check_wire_size(name: &str, bytes: usize) -> Result<(), ClusterError> {
    if bytes > MAX_RECORD_BYTES {
        return Err(ClusterError::JobTooLarge {
            job: name.to_owned(),
            bytes,
            max: MAX_RECORD_BYTES,
        });
    }
    Ok(())
}

/// Refuses `spec` when its record under store key `key` would not fit in
/// one store request.
pub fn check_record_size(key: &str, spec: &JobSpec) -> Result<(), ClusterError> {
    let (record, _) = transitions::submit(None, spec, 0);
    let value = serde_json::to_vec(&record).map_or(usize::MAX, |v| v.len());
    let bytes = OpSize {
        key: key.len(),
        value: Some(value),
    }
    .bytes();
    if bytes > MAX_RECORD_BYTES {
        return Err(ClusterError::JobTooLarge {
            job: spec.name.clone(),
            bytes,
            max: MAX_RECORD_BYTES,
        });
    }
    Ok(())
}

/// `bytes` for people: "5.2 MiB (5,452,595 bytes)".
pub fn size(bytes: usize) -> String {
    let digits = thousands(bytes);
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB ({digits} bytes)", bytes as f64 / 1024.0 / 1024.0)
    } else if bytes >= 1024 {
        format!("{:.1} KiB ({digits} bytes)", bytes as f64 / 1024.0)
    } else {
        format!("{digits} bytes")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well_and_the_limit_is_the_store_request_less_overhead() {
        assert_eq!(size(5_452_595), "5.2 MiB (5,452,595 bytes)");
        assert_eq!(size(2048), "2.0 KiB (2,048 bytes)");
        assert_eq!(size(12), "12 bytes");
        assert_eq!(MAX_RECORD_BYTES, 1_572_864 - 16 * 1024);
        let e = check_wire_size("huge", 5_452_595).unwrap_err().to_string();
        assert!(
            e.starts_with("job \"huge\" is 5.2 MiB (5,452,595 bytes); the largest job the state store accepts is 1.5 MiB (1,556,480 bytes)"),
            "{e}"
        );
        assert!(e.contains("--max-request-bytes"), "{e}");
        assert!(check_wire_size("small", 10_000).is_ok());
    }
}

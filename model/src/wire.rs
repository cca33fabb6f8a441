//! The closed sets of names both the scheduler and the agent speak: job
//! kind, allocation status, desired state, task status, network mode,
//! rootfs kind, volume kind, service protocol, check kind and check status.
//!
//! Each is an enum with its wire string (`as_str`), a `parse` that names
//! the field at fault ([`UnknownValue`]), `TryFrom<&str>`, `Display`, and a
//! serde form equal to its wire string (`"service"`, `"pending"`, `"run"`,
//! ...), which is how job and allocation records are stored in etcd. Beyond
//! these pairs nothing compares wire strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string field holds a value outside its closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {value:?}, expected one of {expected}")]
pub struct UnknownValue {
    /// The field's name or path (`allocation.status`).
    pub field: String,
    /// The value found.
    pub value: String,
    /// The values known, quoted, space-separated.
    pub expected: &'static str,
}

/// Declares a closed set of wire names as an enum with `as_str`, `parse`,
/// `TryFrom<&str>` (for the field named `field`), `Display` and a serde
/// form equal to the first spelling of each variant.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident (field = $field:literal) {
        $($(#[$vmeta:meta])* $variant:ident = $($wire:literal)|+),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every wire name, quoted, for error messages.
            pub const EXPECTED: &'static str =
                wire_enum!(@trim concat!($("\"", wire_enum!(@first $($wire)|+), "\" "),+));

            /// The name on the wire (the first spelling).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => wire_enum!(@first $($wire)|+)),+
                }
            }

            /// Decodes `value`, the wire form of `field` (the field's
            /// name or path, for the error).
            pub fn parse(field: &str, value: &str) -> Result<Self, UnknownValue> {
                match value {
                    $($($wire)|+ => Ok(Self::$variant),)+
                    _ => Err(UnknownValue {
                        field: field.to_owned(),
                        value: value.to_owned(),
                        expected: Self::EXPECTED,
                    }),
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = UnknownValue;

            #[doc = concat!("Decodes the wire form of the ", $field, ".")]
            fn try_from(value: &str) -> Result<Self, UnknownValue> {
                Self::parse($field, value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    (@first $first:literal $(| $rest:literal)*) => { $first };
    (@trim $s:expr) => { trim_last_space($s) };
}

/// `s` without its last byte (the trailing space of `EXPECTED`), in a
/// const context.
const fn trim_last_space(s: &'static str) -> &'static str {
    match s.as_bytes().split_last() {
        Some((b' ', rest)) => match std::str::from_utf8(rest) {
            Ok(t) => t,
            Err(_) => s,
        },
        _ => s,
    }
}

wire_enum! {
    /// What kind of work a job is (`Job.kind`, `Assignment.job_kind`).
    JobKind (field = "job kind") {
        /// Kept running: failed instances are restarted or replaced, and
        /// every exit counts against the restart policy.
        Service = "service",
        /// Runs to completion: a clean exit is the end.
        Batch = "batch",
        /// One instance of each group on every eligible node, kept running
        /// like a service.
        System = "system",
    }
}

wire_enum! {
    /// What the scheduler wants of an allocation (`Allocation.desired`).
    DesiredState (field = "desired state") {
        /// Keep it running (or let a batch task finish).
        Run = "run",
        /// Stop it and report its final status.
        Stop = "stop",
    }
}

wire_enum! {
    /// An allocation's status, as its node reports it and the scheduler
    /// records it (`Allocation.status`, `AllocStatus.status`).
    AllocStatus (field = "allocation status") {
        /// Placed, and not all tasks have started yet.
        Pending = "pending",
        /// Every task started; at least one runs or waits for a restart.
        Running = "running",
        /// Every task ended cleanly, or it was stopped.
        Complete = "complete",
        /// A task failed past its restart policy, or could not start.
        Failed = "failed",
        /// The node it ran on was lost (set by the scheduler).
        Lost = "lost",
    }
}

impl AllocStatus {
    /// Whether nothing of the allocation runs or will run again: no
    /// further transitions happen from here.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Lost)
    }
}

wire_enum! {
    /// One task's status as its node reports it (`TaskState.state`). The
    /// scheduler stores the reported string as it is.
    TaskStatus (field = "task state") {
        /// Being started.
        Pending = "pending",
        /// Its process runs.
        Running = "running",
        /// It exited and waits for a restart.
        Restarting = "restarting",
        /// It exited (or its exit status was lost).
        Exited = "exited",
        /// It could not be started or supervised.
        Failed = "failed",
    }
}

wire_enum! {
    /// How an allocation is networked (`Group.network`; empty is bridge).
    NetworkMode (field = "network") {
        /// Own namespace, veth on the node bridge, an address from the
        /// node subnet.
        Bridge = "bridge" | "",
        /// The node's own network namespace; only where the node policy
        /// allows it.
        Host = "host",
        /// Own namespace with only `lo`.
        None = "none",
    }
}

wire_enum! {
    /// The kind of a task's root filesystem (`Rootfs.kind`; empty is host).
    RootfsKind (field = "rootfs kind") {
        /// A read-only view of the node's `/` (also an unset rootfs).
        Host = "host" | "",
        /// A rootfs directory on the node.
        Dir = "dir",
        /// A local OCI image.
        Oci = "oci",
    }
}

wire_enum! {
    /// The kind of a volume (`Volume.kind`).
    VolumeKind (field = "volume kind") {
        /// A host path bound into the task.
        Bind = "bind",
        /// A fresh tmpfs.
        Tmpfs = "tmpfs",
    }
}

wire_enum! {
    /// The transport a service speaks (`Service.protocol`; empty is tcp):
    /// which `_<proto>` SRV name lists it.
    Protocol (field = "protocol") {
        /// TCP (also an unset protocol).
        Tcp = "tcp" | "",
        /// UDP.
        Udp = "udp",
    }
}

wire_enum! {
    /// How a health check probes (`Check.type`).
    CheckKind (field = "check type") {
        /// A TCP connection to the port is accepted.
        Tcp = "tcp",
        /// An HTTP GET of the path answers 2xx or 3xx.
        Http = "http",
        /// A command inside the allocation exits 0.
        Exec = "exec",
    }
}

wire_enum! {
    /// A health check's verdict (`CheckState.status`).
    CheckStatus (field = "check status") {
        /// Not yet enough results for a verdict.
        Pending = "pending",
        /// Passed `success_before_passing` times in a row.
        Passing = "passing",
        /// Failed `failures_before_critical` times in a row.
        Critical = "critical",
    }
}

#[cfg(test)]
mod tests;

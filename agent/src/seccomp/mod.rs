//! Seccomp: the system calls a task may make.
//!
//! Every task, and every `drover exec` command in it, runs under a seccomp
//! filter that its supervisor (or exec helper) installs as the very last
//! step before `exec`, after the mounts, `pivot_root`, the cgroup, the
//! capability bounding set, the uid change and `no_new_privs`: nothing the
//! runtime itself does is filtered, everything the task does is.
//!
//! - [`default_profile`]: what Docker's and Podman's default profiles
//!   refuse to a container without `CAP_SYS_ADMIN` and friends (kernel
//!   modules, keyrings, `bpf`, `perf_event_open`, `userfaultfd`, `kexec_*`,
//!   `ptrace`, mounts, clocks, swap, namespaces, ...), as a deny list on
//!   top of "allow": see its documentation for why.
//! - [`oci`]: a node may replace it with an OCI seccomp profile (JSON)
//!   named by its policy ([`SeccompPolicy`]), which may also let jobs ask
//!   for none (`seccomp = "unconfined"`).
//! - [`bpf`]: the profile compiled to a classic BPF program, by hand:
//!   no C library (`libseccomp`) in the supervisor, whose memory is
//!   counted per task, and full control of what `seccompiler` does not
//!   express (per-rule actions of an OCI profile, x32 on x86_64).
//!
//! A [`Profile`] holds syscall numbers of the node's own architecture
//! (x86_64 or aarch64); the filter kills a process that makes a system
//! call of any other ABI (i386 and x32 on x86_64, arm32 on aarch64), which
//! a deny list could not otherwise cover.

pub mod bpf;
mod default;
pub mod oci;
mod policy;

#[cfg(target_arch = "aarch64")]
#[path = "names_aarch64.rs"]
mod names;
#[cfg(target_arch = "x86_64")]
#[path = "names_x86_64.rs"]
mod names;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use bpf::Filter;
pub use default::{default_profile, DENIED_SYSCALLS};
pub use policy::{admit, SeccompPolicy};

/// A task's seccomp setting, in its spec.
///
/// A job asks for [`Seccomp::Default`] (the node's profile) or
/// [`Seccomp::Unconfined`]; the runtime's admission turns `Default` into
/// the node policy's [`Seccomp::Profile`] when it names one, and refuses
/// `Unconfined` unless the policy allows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// The built-in [`default_profile`].
    #[default]
    Default,
    /// No filter at all.
    Unconfined,
    /// A profile of the node's (from its policy's OCI file).
    Profile(Box<Profile>),
}

impl Seccomp {
    /// Whether this is [`Seccomp::Default`] (not written into specs).
    pub fn is_default(&self) -> bool {
        *self == Seccomp::Default
    }

    /// The filter to install, `None` when unconfined.
    pub fn filter(&self) -> Result<Option<Filter>, SeccompError> {
        match self {
            Seccomp::Default => Filter::compile(&default_profile()).map(Some),
            Seccomp::Unconfined => Ok(None),
            Seccomp::Profile(p) => Filter::compile(p).map(Some),
        }
    }
}

/// A seccomp profile resolved for this node's architecture: rules tried in
/// order (the first that matches decides), then the default action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What a system call that no rule matches gets.
    pub default_action: Action,
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
    /// `SECCOMP_FILTER_FLAG_*` bits passed to `seccomp(2)` (only `LOG`
    /// and `SPEC_ALLOW` are accepted).
    #[serde(default)]
    pub flags: u32,
}

/// One rule: these system calls, when every argument condition holds, get
/// `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// System call numbers on this node's architecture.
    pub syscalls: Vec<u32>,
    /// What they get.
    pub action: Action,
    /// Conditions on the arguments, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgCmp>,
}

/// What the kernel does with a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it run.
    Allow,
    /// Fail it with this errno, without running it.
    Errno(u16),
    /// Kill the calling thread (`SECCOMP_RET_KILL_THREAD`).
    KillThread,
    /// Kill the whole process (`SECCOMP_RET_KILL_PROCESS`).
    KillProcess,
    /// Send `SIGSYS` to the caller.
    Trap,
    /// Let it run, and log it.
    Log,
    /// Notify a ptrace tracer with this value (`ENOSYS` without one).
    Trace(u16),
}

impl Action {
    /// The `SECCOMP_RET_*` value a BPF program returns for it.
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Trace(d) => libc::SECCOMP_RET_TRACE | u32::from(d),
        }
    }
}

/// A condition on one 64-bit argument of a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgCmp {
    /// Which argument, 0..=5.
    pub index: u8,
    /// How it is compared.
    pub op: CmpOp,
    /// The value compared with; for [`CmpOp::MaskedEq`], the mask.
    pub value: u64,
    /// For [`CmpOp::MaskedEq`]: what the masked argument must equal.
    #[serde(default)]
    pub value_two: u64,
}

/// Comparisons of an argument (unsigned, all 64 bits), as libseccomp's
/// `SCMP_CMP_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg < value`
    Lt,
    /// `arg <= value`
    Le,
    /// `arg > value`
    Gt,
    /// `arg >= value`
    Ge,
    /// `arg & value == value_two`
    MaskedEq,
}

/// A profile that cannot be used, or a filter the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// The profile file is not valid JSON for an OCI seccomp profile.
    #[error("seccomp profile: {0}")]
    Parse(String),
    /// A setting of the profile cannot be honoured; says which.
    #[error("seccomp profile: {0}")]
    Invalid(String),
    /// The compiled program is longer than the kernel takes.
    #[error("seccomp profile compiles to {insns} BPF instructions, more than the kernel's {max}")]
    TooLong {
        /// Its length.
        insns: usize,
        /// `BPF_MAXINSNS`.
        max: usize,
    },
    /// A jump of the program would be longer than classic BPF allows
    /// (a rule with too many argument conditions).
    #[error("seccomp profile: rule for syscall {nr} is too long to compile ({len} instructions)")]
    RuleTooLong {
        /// The syscall number.
        nr: u32,
        /// How far the jump would go.
        len: usize,
    },
}

/// The `AUDIT_ARCH_*` value of this node's system calls.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: u32 = 0xC000_003E;
/// The `AUDIT_ARCH_*` value of this node's system calls.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: u32 = 0xC000_00B7;
/// The name of this node's architecture, as OCI profiles spell it.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH_NAME: &str = "SCMP_ARCH_X86_64";
/// The name of this node's architecture, as OCI profiles spell it.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH_NAME: &str = "SCMP_ARCH_AARCH64";

/// The number of system call `name` on this node's architecture.
pub fn syscall_number(name: &str) -> Option<u32> {
    names::SYSCALLS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .and_then(|i| u32::try_from(names::SYSCALLS[i].1).ok())
}

/// The name of system call `nr` on this node's architecture.
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    names::SYSCALLS
        .iter()
        .find(|(_, n)| u32::try_from(*n).ok() == Some(nr))
        .map(|(name, _)| *name)
}

//! OCI seccomp profiles (the `linux.seccomp` object of the OCI runtime
//! spec, as `runc` and `crun` take it), read into a [`Profile`] for this
//! node's architecture.
//!
//! ```json
//! {
//!   "defaultAction": "SCMP_ACT_ALLOW",
//!   "defaultErrnoRet": 1,
//!   "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
//!   "flags": ["SECCOMP_FILTER_FLAG_LOG"],
//!   "syscalls": [
//!     {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
//!     {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
//!      "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
//!   ]
//! }
//! ```
//!
//! Differences from libseccomp that a profile author should know: the
//! entries are tried in file order and the first whose names and
//! arguments match decides; several `args` of one entry must all hold
//! (also two on the same index); names this architecture does not have
//! are skipped (reported by [`Parsed::unknown`]), as `runc` does; system
//! calls of other architectures are always killed, whatever
//! `architectures` lists; `SCMP_ACT_NOTIFY` and listeners are refused.
//! Docker's own profile format (`archMap`, `includes`, `excludes`) is not
//! OCI: its conditions on capabilities would be lost, so it is refused.

use serde::Deserialize;

use super::bpf::ALLOWED_FLAGS;
use super::{syscall_number, Action, ArgCmp, CmpOp, Profile, Rule, SeccompError, NATIVE_ARCH_NAME};

/// A profile file read for this node, and the names it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The profile.
    pub profile: Profile,
    /// Syscall names that this architecture does not have (skipped).
    pub unknown: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciSeccomp {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    listener_path: String,
    #[serde(default)]
    listener_metadata: String,
    #[serde(default)]
    syscalls: Vec<OciSyscall>,
    /// Free text, ignored.
    #[serde(default, rename = "comment")]
    _comment: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciSyscall {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<OciArg>,
    /// Free text, ignored.
    #[serde(default, rename = "comment")]
    _comment: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Parses the JSON text of an OCI seccomp profile.
pub fn parse(text: &str) -> Result<Parsed, SeccompError> {
    let oci: OciSeccomp = serde_json::from_str(text).map_err(|e| {
        let hint = if text.contains("\"archMap\"") || text.contains("\"includes\"") {
            " (this looks like Docker's profile format, whose conditions on \
             capabilities an OCI runtime cannot honour: give an OCI profile)"
        } else {
            ""
        };
        SeccompError::Parse(format!("{e}{hint}"))
    })?;
    if !oci.listener_path.is_empty() || !oci.listener_metadata.is_empty() {
        return Err(SeccompError::Invalid(
            "listenerPath/listenerMetadata: user-space notification is not supported".into(),
        ));
    }
    if !oci.architectures.is_empty() && !oci.architectures.iter().any(|a| a == NATIVE_ARCH_NAME) {
        return Err(SeccompError::Invalid(format!(
            "architectures {:?} do not include this node's {NATIVE_ARCH_NAME}",
            oci.architectures
        )));
    }
    let default_errno = oci.default_errno_ret;
    let default_action = action(&oci.default_action, default_errno, "defaultAction")?;
    let mut flags = 0u32;
    for f in &oci.flags {
        flags |= flag(f)?;
    }
    let mut rules = Vec::new();
    let mut unknown = Vec::new();
    for (i, s) in oci.syscalls.iter().enumerate() {
        let at = format!("syscalls[{i}]");
        if s.names.is_empty() {
            return Err(SeccompError::Invalid(format!("{at}: names is empty")));
        }
        let act = action(
            &s.action,
            s.errno_ret.or(default_errno),
            &format!("{at}.action"),
        )?;
        let args = s
            .args
            .iter()
            .enumerate()
            .map(|(j, a)| arg(a, &format!("{at}.args[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut syscalls = Vec::new();
        for name in &s.names {
            match syscall_number(name) {
                Some(nr) => syscalls.push(nr),
                None => unknown.push(name.clone()),
            }
        }
        if !syscalls.is_empty() {
            rules.push(Rule {
                syscalls,
                action: act,
                args,
            });
        }
    }
    unknown.sort();
    unknown.dedup();
    Ok(Parsed {
        profile: Profile {
            default_action,
            rules,
            flags,
        },
        unknown,
    })
}

fn action(name: &str, errno: Option<u32>, at: &str) -> Result<Action, SeccompError> {
    let data = |what: &str| -> Result<u16, SeccompError> {
        let e = errno.unwrap_or(libc::EPERM as u32);
        u16::try_from(e)
            .ok()
            .filter(|e| *e <= 4095)
            .ok_or_else(|| SeccompError::Invalid(format!("{at}: {what} {e} is over 4095")))
    };
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(data("errnoRet")?),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_TRACE" => Action::Trace(data("errnoRet (the tracer's message)")?),
        "SCMP_ACT_NOTIFY" => {
            return Err(SeccompError::Invalid(format!(
                "{at}: SCMP_ACT_NOTIFY needs a user-space listener, which Drover does not run"
            )))
        }
        other => {
            return Err(SeccompError::Invalid(format!(
                "{at}: unknown action {other:?} (SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, \
                 SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_LOG or \
                 SCMP_ACT_TRACE)"
            )))
        }
    })
}

fn flag(name: &str) -> Result<u32, SeccompError> {
    let bit = match name {
        "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG,
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
        // The filter is installed by a single-threaded process.
        "SECCOMP_FILTER_FLAG_TSYNC" => 0,
        other => {
            return Err(SeccompError::Invalid(format!(
                "flags: {other:?} is not supported (SECCOMP_FILTER_FLAG_LOG, \
                 SECCOMP_FILTER_FLAG_SPEC_ALLOW or SECCOMP_FILTER_FLAG_TSYNC)"
            )))
        }
    };
    let bit = u32::try_from(bit).unwrap_or(0);
    debug_assert_eq!(bit & !ALLOWED_FLAGS, 0);
    Ok(bit)
}

fn arg(a: &OciArg, at: &str) -> Result<ArgCmp, SeccompError> {
    let index = u8::try_from(a.index)
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| SeccompError::Invalid(format!("{at}.index {}: must be 0 to 5", a.index)))?;
    let op = match a.op.as_str() {
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_GT" => CmpOp::Gt,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq,
        other => {
            return Err(SeccompError::Invalid(format!(
                "{at}.op: unknown operator {other:?} (SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, \
                 SCMP_CMP_LE, SCMP_CMP_GT, SCMP_CMP_GE or SCMP_CMP_MASKED_EQ)"
            )))
        }
    };
    Ok(ArgCmp {
        index,
        op,
        value: a.value,
        value_two: a.value_two,
    })
}

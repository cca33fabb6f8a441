//! The built-in profile every task gets unless its node says otherwise.
//!
//! It refuses (`EPERM`) what Docker's and Podman's default profiles
//! refuse to a container that holds none of `CAP_SYS_ADMIN`,
//! `CAP_SYS_MODULE`, `CAP_SYS_BOOT`, `CAP_SYS_TIME`, `CAP_SYS_PTRACE`,
//! `CAP_SYS_RAWIO`, `CAP_SYSLOG`, `CAP_BPF`, `CAP_PERFMON`,
//! `CAP_DAC_READ_SEARCH` or `CAP_SYS_TTY_CONFIG`, which is every Drover
//! task (see `KEPT_CAPABILITIES`), and everything else is allowed.
//!
//! Why a deny list on top of "allow", where Docker writes an allow list
//! with "deny" as default: for a task with Drover's capabilities the two
//! refuse the same calls (Docker's allow list is "every syscall" less
//! these), but an allow list also refuses every system call newer than
//! itself, which has broken programs each time a C library started to use
//! one (`clone3`, `faccessat2`, `close_range`, `epoll_pwait2`, ...), and
//! it must be kept in step with every kernel. The cost: a dangerous system
//! call added to a future kernel is allowed until it is listed here; the
//! capabilities a task lacks still guard most of them, as they guard
//! these. The filter stays short (under 200 instructions) and every
//! unlisted call is in the kernel's allow cache.
//!
//! Beyond plain refusals: `clone` and `unshare` are refused only with
//! namespace flags (a task cannot make a user namespace of its own, whose
//! capabilities would reopen the kernel surface that the missing ones
//! close), `clone3` fails with `ENOSYS` (its flags are behind a pointer
//! that seccomp cannot read, and C libraries fall back to `clone` on
//! `ENOSYS`), and `personality` is allowed only with the values Docker
//! allows (Linux, 32-bit, `UNAME26` and the query), not with flags such
//! as `ADDR_NO_RANDOMIZE` that weaken ASLR.

use super::{Action, ArgCmp, CmpOp, Profile, Rule};

/// System calls the default profile refuses with `EPERM`, with why.
pub const DENIED_SYSCALLS: &[(&str, libc::c_long)] = &[
    // Kernel code: modules, kexec, BPF programs.
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    // The kernel's keyrings are not namespaced.
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("keyctl", libc::SYS_keyctl),
    // Kernel observation and its attack surface.
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("syslog", libc::SYS_syslog),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    // Other processes' memory.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("process_madvise", libc::SYS_process_madvise),
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    // File handles bypass the mount tree (the "shocker" escape).
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // Mounts, old and new API, and the root.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    // Namespaces of other processes.
    ("setns", libc::SYS_setns),
    // The node's clocks, swap, quotas, accounting, power.
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("acct", libc::SYS_acct),
    ("reboot", libc::SYS_reboot),
    // Terminals of others.
    ("vhangup", libc::SYS_vhangup),
    // Obsolete calls with a history of bugs.
    ("nfsservctl", libc::SYS_nfsservctl),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    #[cfg(target_arch = "x86_64")]
    ("_sysctl", libc::SYS__sysctl),
    // I/O ports and the LDT (x86 only).
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("modify_ldt", libc::SYS_modify_ldt),
];

/// `personality(2)` values allowed: `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32 | UNAME26` and `0xffffffff` (the query).
pub const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`, refused to `clone`.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// The same and `CLONE_NEWTIME` (whose bit is part of the exit signal in
/// `clone`), refused to `unshare`.
pub const UNSHARE_NAMESPACE_FLAGS: u64 = CLONE_NAMESPACE_FLAGS | 0x80;

fn nr(n: libc::c_long) -> u32 {
    // Syscall numbers of x86_64 and aarch64 are small and positive.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The built-in profile: see the module documentation.
pub fn default_profile() -> Profile {
    let eperm = Action::Errno(libc::EPERM as u16);
    let only_if = |n: libc::c_long, args: Vec<ArgCmp>| Rule {
        syscalls: vec![nr(n)],
        action: Action::Allow,
        args,
    };
    let refuse = |n: libc::c_long, action: Action| Rule {
        syscalls: vec![nr(n)],
        action,
        args: Vec::new(),
    };
    let no_namespaces = |mask: u64| ArgCmp {
        index: 0,
        op: CmpOp::MaskedEq,
        value: mask,
        value_two: 0,
    };
    let mut rules = Vec::new();
    for value in ALLOWED_PERSONALITIES {
        let is = ArgCmp {
            index: 0,
            op: CmpOp::Eq,
            value,
            value_two: 0,
        };
        rules.push(only_if(libc::SYS_personality, vec![is]));
    }
    rules.push(refuse(libc::SYS_personality, eperm));
    rules.push(only_if(
        libc::SYS_clone,
        vec![no_namespaces(CLONE_NAMESPACE_FLAGS)],
    ));
    rules.push(refuse(libc::SYS_clone, eperm));
    rules.push(only_if(
        libc::SYS_unshare,
        vec![no_namespaces(UNSHARE_NAMESPACE_FLAGS)],
    ));
    rules.push(refuse(libc::SYS_unshare, eperm));
    rules.push(refuse(libc::SYS_clone3, Action::Errno(libc::ENOSYS as u16)));
    rules.push(Rule {
        syscalls: DENIED_SYSCALLS.iter().map(|&(_, n)| nr(n)).collect(),
        action: eperm,
        args: Vec::new(),
    });
    Profile {
        default_action: Action::Allow,
        rules,
        flags: 0,
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The compiled programs run on a small classic-BPF interpreter (what the
//! kernel does with them), without root; the e2e tests in
//! `tests/tests/seccomp.rs` check the same inside real tasks.

use std::path::PathBuf;

use super::bpf::Insn;
use super::*;

const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// Runs `prog` on a `struct seccomp_data`, as the kernel would.
fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (ld, and, ret) = (
        (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
        (libc::BPF_RET | libc::BPF_K) as u16,
    );
    let jmp = |op: u32| (libc::BPF_JMP | op | libc::BPF_K) as u16;
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        let k = i.k;
        let cond = match i.code {
            c if c == ld => {
                let at = k as usize;
                acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                continue;
            }
            c if c == and => {
                acc &= k;
                continue;
            }
            c if c == ret => return k,
            c if c == jmp(libc::BPF_JEQ) => acc == k,
            c if c == jmp(libc::BPF_JGT) => acc > k,
            c if c == jmp(libc::BPF_JGE) => acc >= k,
            other => panic!("unexpected opcode {other:#x}"),
        };
        pc += usize::from(if cond { i.jt } else { i.jf });
    }
}

fn default_filter() -> Filter {
    Filter::compile(&default_profile()).expect("compiles")
}

fn call(f: &Filter, nr: libc::c_long, args: [u64; 6]) -> u32 {
    run(f.insns(), NATIVE_ARCH, u32::try_from(nr).unwrap(), args)
}

#[test]
fn the_default_profile_refuses_its_list_and_allows_the_rest() {
    let f = default_filter();
    assert!(f.insns().len() < 200, "{} instructions", f.insns().len());
    for &(name, nr) in DENIED_SYSCALLS {
        assert_eq!(call(&f, nr, [0; 6]), EPERM, "{name}");
        assert_eq!(syscall_number(name), u32::try_from(nr).ok(), "{name}");
    }
    for nr in [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_openat,
        libc::SYS_execve,
        libc::SYS_futex,
        libc::SYS_chroot,
        libc::SYS_sethostname,
        libc::SYS_seccomp,
    ] {
        assert_eq!(call(&f, nr, [0; 6]), ALLOW, "{:?}", syscall_name(nr as u32));
    }
}

#[test]
fn namespaces_clone3_and_personality_flags_are_refused() {
    let f = default_filter();
    let sigchld = libc::SIGCHLD as u64;
    let (newuser, newns, newtime) = (
        libc::CLONE_NEWUSER as u64,
        libc::CLONE_NEWNS as u64,
        libc::CLONE_NEWTIME as u64,
    );
    // fork and threads are clone without namespace flags.
    let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
    assert_eq!(call(&f, libc::SYS_clone, [sigchld, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&f, libc::SYS_clone, [thread, 1, 2, 3, 4, 5]), ALLOW);
    assert_eq!(
        call(&f, libc::SYS_clone, [sigchld | newuser, 0, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(call(&f, libc::SYS_clone, [newns, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(
        call(
            &f,
            libc::SYS_unshare,
            [libc::CLONE_FILES as u64, 0, 0, 0, 0, 0]
        ),
        ALLOW
    );
    for flags in [newuser, newns, newtime, libc::CLONE_NEWNET as u64] {
        assert_eq!(
            call(&f, libc::SYS_unshare, [flags, 0, 0, 0, 0, 0]),
            EPERM,
            "{flags:#x}"
        );
    }
    assert_eq!(call(&f, libc::SYS_clone3, [0; 6]), ENOSYS);
    for ok in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
        assert_eq!(
            call(&f, libc::SYS_personality, [ok, 0, 0, 0, 0, 0]),
            ALLOW,
            "{ok:#x}"
        );
    }
    // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, and garbage in the high word.
    for bad in [0x0040000, 0x0400000, 0x1_0000_0000] {
        assert_eq!(
            call(&f, libc::SYS_personality, [bad, 0, 0, 0, 0, 0]),
            EPERM,
            "{bad:#x}"
        );
    }
}

#[test]
fn other_architectures_are_killed() {
    let f = default_filter();
    // AUDIT_ARCH_I386 and AUDIT_ARCH_ARM: the numbers mean other calls.
    for arch in [0x4000_0003, 0x4000_0028] {
        assert_eq!(run(f.insns(), arch, 0, [0; 6]), KILL);
    }
    #[cfg(target_arch = "x86_64")]
    {
        // x32: the native arch with bit 30 in the number.
        let x32_read = 0x4000_0000;
        assert_eq!(run(f.insns(), NATIVE_ARCH, x32_read, [0; 6]), KILL);
        // -1 (a tracer's skipped call) is not x32.
        assert_eq!(run(f.insns(), NATIVE_ARCH, u32::MAX, [0; 6]), ALLOW);
    }
}

#[test]
fn every_comparison_agrees_with_its_meaning() {
    let values = [
        0u64,
        1,
        7,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0007,
        0x2_0000_0000,
        u64::MAX - 1,
        u64::MAX,
    ];
    let ops = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::MaskedEq,
    ];
    for op in ops {
        for &value in &values {
            let value_two = value & 0x1_0000_0003;
            let profile = Profile {
                default_action: Action::Allow,
                rules: vec![Rule {
                    syscalls: vec![42],
                    action: Action::Errno(7),
                    args: vec![ArgCmp {
                        index: 3,
                        op,
                        value,
                        value_two,
                    }],
                }],
                flags: 0,
            };
            let f = Filter::compile(&profile).unwrap();
            for &arg in &values {
                let holds = match op {
                    CmpOp::Eq => arg == value,
                    CmpOp::Ne => arg != value,
                    CmpOp::Lt => arg < value,
                    CmpOp::Le => arg <= value,
                    CmpOp::Gt => arg > value,
                    CmpOp::Ge => arg >= value,
                    CmpOp::MaskedEq => arg & value == value_two,
                };
                let got = run(f.insns(), NATIVE_ARCH, 42, [0, 0, 0, arg, 0, 0]);
                let want = if holds {
                    libc::SECCOMP_RET_ERRNO | 7
                } else {
                    ALLOW
                };
                assert_eq!(got, want, "{op:?} arg {arg:#x} value {value:#x}");
                // Another syscall is never affected.
                assert_eq!(run(f.insns(), NATIVE_ARCH, 43, [0, 0, 0, arg, 0, 0]), ALLOW);
            }
        }
    }
}

#[test]
fn rules_are_tried_in_order_and_all_conditions_must_hold() {
    let eq = |index, value| ArgCmp {
        index,
        op: CmpOp::Eq,
        value,
        value_two: 0,
    };
    let profile = Profile {
        default_action: Action::Errno(1),
        rules: vec![
            Rule {
                syscalls: vec![10, 11],
                action: Action::Allow,
                args: vec![eq(0, 5), eq(5, 6)],
            },
            Rule {
                syscalls: vec![10],
                action: Action::Trap,
                args: vec![],
            },
        ],
        flags: 0,
    };
    let f = Filter::compile(&profile).unwrap();
    let r = |nr, args| run(f.insns(), NATIVE_ARCH, nr, args);
    assert_eq!(r(10, [5, 0, 0, 0, 0, 6]), ALLOW);
    assert_eq!(r(11, [5, 0, 0, 0, 0, 6]), ALLOW);
    assert_eq!(r(10, [5, 0, 0, 0, 0, 7]), libc::SECCOMP_RET_TRAP);
    assert_eq!(r(11, [5, 0, 0, 0, 0, 7]), libc::SECCOMP_RET_ERRNO | 1);
    assert_eq!(r(12, [5, 0, 0, 0, 0, 6]), libc::SECCOMP_RET_ERRNO | 1);
}

#[test]
fn oversized_profiles_and_bad_flags_are_refused() {
    let huge = Profile {
        default_action: Action::Allow,
        rules: vec![Rule {
            syscalls: (0..3000).collect(),
            action: Action::KillThread,
            args: vec![],
        }],
        flags: 0,
    };
    let e = Filter::compile(&huge).unwrap_err();
    assert!(matches!(e, SeccompError::TooLong { .. }), "{e}");
    let flagged = Profile {
        flags: libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32,
        ..default_profile()
    };
    assert!(Filter::compile(&flagged)
        .unwrap_err()
        .to_string()
        .contains("flags"));
}

const OCI: &str = r#"{
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 38,
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_X86"],
  "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
  "syscalls": [
    {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
    {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "comment": "Linux only",
     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
    {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
  ]
}"#;

#[test]
fn oci_profiles_are_read_for_this_architecture() {
    let parsed = oci::parse(OCI).expect("parses");
    assert_eq!(parsed.unknown, vec!["no_such_call".to_owned()]);
    let p = &parsed.profile;
    assert_eq!(p.default_action, Action::Errno(38));
    assert_eq!(p.flags, libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32);
    assert_eq!(p.rules.len(), 4);
    assert_eq!(p.rules[0].syscalls.len(), 2);
    let f = Filter::compile(p).unwrap();
    let nr = |n: libc::c_long| u32::try_from(n).unwrap();
    let r = |n, args| run(f.insns(), NATIVE_ARCH, nr(n), args);
    assert_eq!(r(libc::SYS_read, [0; 6]), ALLOW);
    assert_eq!(r(libc::SYS_personality, [8, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        r(libc::SYS_personality, [0, 0, 0, 0, 0, 0]),
        libc::SECCOMP_RET_ERRNO | 38
    );
    assert_eq!(r(libc::SYS_ptrace, [0; 6]), EPERM);
    assert_eq!(
        r(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
        ALLOW
    );
    let newuser = libc::CLONE_NEWUSER as u64;
    assert_eq!(
        r(libc::SYS_clone, [newuser, 0, 0, 0, 0, 0]),
        libc::SECCOMP_RET_ERRNO | 38
    );
}

#[test]
fn oci_profiles_that_cannot_be_honoured_are_refused_with_the_reason() {
    let cases = [
        (
            r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
            "unknown action \"SCMP_ACT_NOPE\"",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PPC64LE"]}"#,
            "do not include this node's",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/l.sock"}"#,
            "listenerPath",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}"#,
            "SECCOMP_FILTER_FLAG_NEW_LISTENER",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
               "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
            "syscalls[0].args[0].index 6",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
               "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0, "op": "LIKE"}]}]}"#,
            "unknown operator \"LIKE\"",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0]: names is empty",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000}"#,
            "over 4095",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "archMap": [], "syscalls": [{"names": ["read"],
               "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
            "Docker's profile format",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}"#,
            "SCMP_ACT_NOTIFY",
        ),
    ];
    for (text, want) in cases {
        let e = oci::parse(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn the_policy_decides_unconfined_and_the_profile() {
    let mut policy = SeccompPolicy::default();
    assert_eq!(admit(&policy, &Seccomp::Default).unwrap(), Seccomp::Default);
    let e = admit(&policy, &Seccomp::Unconfined).unwrap_err();
    assert!(e.contains("seccomp.allow_unconfined"), "{e}");
    policy.allow_unconfined = true;
    assert_eq!(
        admit(&policy, &Seccomp::Unconfined).unwrap(),
        Seccomp::Unconfined
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.json");
    std::fs::write(&file, OCI).unwrap();
    policy.profile = Some(file.clone());
    policy.load().expect("loads");
    let Seccomp::Profile(p) = admit(&policy, &Seccomp::Default).unwrap() else {
        panic!("the policy's profile");
    };
    assert_eq!(p.default_action, Action::Errno(38));
    assert_eq!(p.flags, libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32);

    std::fs::write(&file, "{").unwrap();
    let e = policy.load().unwrap_err();
    assert!(
        e.contains("seccomp.profile") && e.contains("profile.json"),
        "{e}"
    );
    policy.profile = Some(PathBuf::from("relative.json"));
    assert!(policy.load().unwrap_err().contains("absolute"));
}

#[test]
fn settings_round_trip_through_json() {
    for s in [
        Seccomp::Default,
        Seccomp::Unconfined,
        Seccomp::Profile(Box::new(default_profile())),
    ] {
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Seccomp>(&json).unwrap(), s, "{json}");
    }
    assert_eq!(
        serde_json::to_string(&Seccomp::Unconfined).unwrap(),
        "\"unconfined\""
    );
}

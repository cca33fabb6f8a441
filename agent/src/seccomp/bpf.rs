//! A [`Profile`] compiled to a classic BPF program for `seccomp(2)`, and
//! its installation.
//!
//! The program checks the architecture first (another ABI kills the
//! process: its system call numbers mean other calls; on x86_64 the x32
//! numbers, which carry bit 30, too), then tries the rules in order, each
//! a comparison of the syscall number followed by its argument
//! conditions, and ends with the default action:
//!
//! ```text
//!     ld  [arch]          ; jeq NATIVE, +1, 0 ; ret KILL_PROCESS
//!     ld  [nr]            ; (x86_64) nr >= 1<<30 && nr != -1: ret KILL_PROCESS
//!     jeq NR1, 0, next1   ; ret ACTION1
//! next1:
//!     jeq NR2, 0, next2   ; <argument conditions, failing to reload2> ; ret ACTION2
//! reload2:
//!     ld  [nr]
//! next2:
//!     ...
//!     ret DEFAULT
//! ```
//!
//! Syscalls that no rule names reach the default action through number
//! comparisons only, so the kernel's seccomp action cache (Linux 5.11+)
//! records them as always allowed under an allow-by-default profile: they
//! cost nothing after the filter is installed.

use std::io;

use super::{ArgCmp, CmpOp, Profile, SeccompError, NATIVE_ARCH};

/// Largest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// Bit 30 marks x32 system calls on x86_64 (`__X32_SYSCALL_BIT`).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `SECCOMP_FILTER_FLAG_*` bits a profile may ask for.
pub const ALLOWED_FLAGS: u32 =
    (libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) as u32;

/// One instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());

/// A compiled filter, ready to be installed in a forked child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    insns: Vec<Insn>,
    flags: u32,
}

impl Filter {
    /// Compiles `profile` for this node's architecture.
    pub fn compile(profile: &Profile) -> Result<Filter, SeccompError> {
        if profile.flags & !ALLOWED_FLAGS != 0 {
            return Err(SeccompError::Invalid(format!(
                "filter flags {:#x}: only SECCOMP_FILTER_FLAG_LOG and \
                 SECCOMP_FILTER_FLAG_SPEC_ALLOW are supported",
                profile.flags
            )));
        }
        let insns = program(profile)?;
        if insns.len() > MAX_INSNS {
            return Err(SeccompError::TooLong {
                insns: insns.len(),
                max: MAX_INSNS,
            });
        }
        Ok(Filter {
            insns,
            flags: profile.flags,
        })
    }

    /// The program.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Installs the filter on the calling thread with `seccomp(2)`; it is
    /// inherited by every child and kept across `execve`. Needs
    /// `no_new_privs` (or `CAP_SYS_ADMIN`). Makes one system call on data
    /// prepared before, allocates nothing: async-signal-safe, for a
    /// `pre_exec` closure or a forked child.
    pub fn install_in_child(&self) -> io::Result<()> {
        let len = u16::try_from(self.insns.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        let prog = libc::sock_fprog {
            len,
            filter: self.insns.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: `prog` points at `len` instructions laid out as
        // `struct sock_filter` (checked above at compile time), alive for
        // the call; the kernel copies them and never writes through the
        // pointer.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::c_ulong::from(self.flags),
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn program(profile: &Profile) -> Result<Vec<Insn>, SeccompError> {
    let mut a = Asm::default();
    let kill = super::Action::KillProcess.ret();
    a.stmt(LD_ABS, OFF_ARCH);
    let native = a.label();
    a.jump(JEQ, NATIVE_ARCH, Jump::To(native), Jump::Next);
    a.stmt(RET, kill);
    a.bind(native);
    a.stmt(LD_ABS, OFF_NR);
    #[cfg(target_arch = "x86_64")]
    {
        let rules = a.label();
        a.jump(JGE, X32_SYSCALL_BIT, Jump::Next, Jump::To(rules));
        // -1 is "no system call" (a tracer skipping one): not x32.
        a.jump(JEQ, u32::MAX, Jump::To(rules), Jump::Next);
        a.stmt(RET, kill);
        a.bind(rules);
    }
    for rule in &profile.rules {
        let ret = rule.action.ret();
        for &nr in &rule.syscalls {
            let start = a.len();
            let next = a.label();
            a.jump(JEQ, nr, Jump::Next, Jump::To(next));
            if rule.args.is_empty() {
                a.stmt(RET, ret);
            } else {
                let reload = a.label();
                for cmp in &rule.args {
                    condition(&mut a, cmp, reload)?;
                }
                a.stmt(RET, ret);
                a.bind(reload);
                a.stmt(LD_ABS, OFF_NR);
            }
            a.bind(next);
            if a.len() - start > usize::from(u8::MAX) {
                return Err(SeccompError::RuleTooLong {
                    nr,
                    len: a.len() - start,
                });
            }
        }
    }
    a.stmt(RET, profile.default_action.ret());
    a.finish()
}

/// Offsets of the low and high 32 bits of argument `index`.
fn arg_offsets(index: u8) -> Result<(u32, u32), SeccompError> {
    if index > 5 {
        return Err(SeccompError::Invalid(format!(
            "argument index {index}: system calls have arguments 0 to 5"
        )));
    }
    let base = OFF_ARGS + 8 * u32::from(index);
    Ok(if cfg!(target_endian = "little") {
        (base, base + 4)
    } else {
        (base + 4, base)
    })
}

/// Emits the test of `cmp`, which falls through when it holds and jumps
/// to `fail` otherwise. The 64-bit argument is compared as two words,
/// high first.
fn condition(a: &mut Asm, cmp: &ArgCmp, fail: Label) -> Result<(), SeccompError> {
    let (lo_off, hi_off) = arg_offsets(cmp.index)?;
    let (hi, lo) = split(cmp.value);
    let ok = a.label();
    let fail = Jump::To(fail);
    let pass = Jump::To(ok);
    match cmp.op {
        CmpOp::Eq => {
            a.stmt(LD_ABS, hi_off);
            a.jump(JEQ, hi, Jump::Next, fail);
            a.stmt(LD_ABS, lo_off);
            a.jump(JEQ, lo, Jump::Next, fail);
        }
        CmpOp::Ne => {
            a.stmt(LD_ABS, hi_off);
            a.jump(JEQ, hi, Jump::Next, pass);
            a.stmt(LD_ABS, lo_off);
            a.jump(JEQ, lo, fail, Jump::Next);
        }
        CmpOp::MaskedEq => {
            let (want_hi, want_lo) = split(cmp.value_two);
            a.stmt(LD_ABS, hi_off);
            a.stmt(AND, hi);
            a.jump(JEQ, want_hi, Jump::Next, fail);
            a.stmt(LD_ABS, lo_off);
            a.stmt(AND, lo);
            a.jump(JEQ, want_lo, Jump::Next, fail);
        }
        CmpOp::Gt | CmpOp::Ge => {
            // High word greater: holds; less: fails; equal: the low word decides.
            a.stmt(LD_ABS, hi_off);
            a.jump(JGT, hi, pass, Jump::Next);
            a.jump(JEQ, hi, Jump::Next, fail);
            a.stmt(LD_ABS, lo_off);
            let op = if cmp.op == CmpOp::Gt { JGT } else { JGE };
            a.jump(op, lo, Jump::Next, fail);
        }
        CmpOp::Lt | CmpOp::Le => {
            // The negation of Ge and Gt.
            a.stmt(LD_ABS, hi_off);
            a.jump(JGT, hi, fail, Jump::Next);
            a.jump(JEQ, hi, Jump::Next, pass);
            a.stmt(LD_ABS, lo_off);
            let op = if cmp.op == CmpOp::Lt { JGE } else { JGT };
            a.jump(op, lo, fail, Jump::Next);
        }
    }
    a.bind(ok);
    Ok(())
}

/// `(high, low)` 32-bit halves.
fn split(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// Opcodes used (`linux/bpf_common.h`).
const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// A place in the program that jumps go to, bound once.
#[derive(Debug, Clone, Copy)]
struct Label(usize);

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
enum Jump {
    /// The next instruction.
    Next,
    /// A label further down.
    To(Label),
}

/// A tiny assembler: forward jumps to labels, resolved by `finish`.
#[derive(Debug, Default)]
struct Asm {
    insns: Vec<Insn>,
    /// Each label's position, once bound.
    labels: Vec<Option<usize>>,
    /// `(instruction, true branch?, label)` to patch.
    fixups: Vec<(usize, bool, Label)>,
}

impl Asm {
    fn len(&self) -> usize {
        self.insns.len()
    }

    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }

    fn jump(&mut self, code: u16, k: u32, jt: Jump, jf: Jump) {
        let at = self.insns.len();
        for (branch, to) in [(true, jt), (false, jf)] {
            if let Jump::To(l) = to {
                self.fixups.push((at, branch, l));
            }
        }
        self.stmt(code, k);
    }

    /// Resolves the jumps: forward only, at most 255 instructions.
    fn finish(mut self) -> Result<Vec<Insn>, SeccompError> {
        for &(at, branch, label) in &self.fixups {
            let target = self.labels[label.0].ok_or_else(|| {
                SeccompError::Invalid(format!("internal: label {} never bound", label.0))
            })?;
            let offset = target
                .checked_sub(at + 1)
                .and_then(|o| u8::try_from(o).ok())
                .ok_or_else(|| {
                    SeccompError::Invalid(format!(
                        "internal: jump from {at} to {target} does not fit classic BPF"
                    ))
                })?;
            let insn = &mut self.insns[at];
            if branch {
                insn.jt = offset;
            } else {
                insn.jf = offset;
            }
        }
        Ok(self.insns)
    }
}

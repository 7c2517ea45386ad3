//! Kernel refusals made by the kernel itself: a seccomp filter, installed in a child before it
//! execs (`Command::pre_exec`) or on a test's own thread, that answers chosen syscalls — or
//! only some of their arguments, as Docker's profile matches `clone`'s flags — with an errno.
//! A [`Rule`] names a syscall and, optionally, argument values (each compared under a mask),
//! so a filter can refuse one `io_uring_register` opcode, one `bpf` command, one
//! `setsockopt` level and name, or `mmap` with `MAP_HUGETLB` in its flags. Included by path
//! from the test crates that need it.
// Each including test crate uses part of this.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// x86-64 syscall numbers the rules name.
pub mod nr {
    pub const MMAP: u32 = 9;
    pub const SOCKET: u32 = 41;
    pub const SETSOCKOPT: u32 = 54;
    pub const SCHED_SETAFFINITY: u32 = 203;
    pub const OPENAT: u32 = 257;
    pub const MEMFD_CREATE: u32 = 319;
    pub const BPF: u32 = 321;
    pub const IO_URING_SETUP: u32 = 425;
    pub const IO_URING_ENTER: u32 = 426;
    pub const IO_URING_REGISTER: u32 = 427;
}

/// `io_uring_register` opcodes (`enum io_uring_register_op`).
pub mod reg {
    pub const FILES_UPDATE: u32 = 6;
    pub const PROBE: u32 = 8;
    pub const FILES2: u32 = 13;
    pub const BUFFERS2: u32 = 15;
    pub const BUFFERS_UPDATE: u32 = 16;
    pub const PBUF_RING: u32 = 22;
}

/// One argument test: `(args[index] & mask) == value`, on the low 32 bits.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    pub index: u8,
    pub mask: u32,
    pub value: u32,
}

/// Refuse syscall `nr` with `errno` when every `args` test holds (always, without tests).
#[derive(Clone, Debug)]
pub struct Rule {
    pub nr: u32,
    pub args: Vec<Arg>,
    pub errno: i32,
}

impl Rule {
    /// The whole syscall.
    pub fn syscall(nr: u32, errno: i32) -> Rule {
        Rule {
            nr,
            args: Vec::new(),
            errno,
        }
    }

    /// The syscall when argument `index` equals `value`.
    pub fn arg(mut self, index: u8, value: u32) -> Rule {
        self.args.push(Arg {
            index,
            mask: u32::MAX,
            value,
        });
        self
    }

    /// The syscall when argument `index` has every bit of `bits` set.
    pub fn arg_bits(mut self, index: u8, bits: u32) -> Rule {
        self.args.push(Arg {
            index,
            mask: bits,
            value: bits,
        });
        self
    }
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const ALLOW: u32 = 0x7fff_0000;
const ERRNO: u32 = 0x0005_0000;
/// `offsetof(struct seccomp_data, args)`.
const ARGS_AT: u32 = 16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter: on x86-64, each rule in turn (load nr; test it; test each argument; return
/// the errno), every other call allowed. A failed test jumps past the rest of its rule.
pub fn program(rules: &[Rule]) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, ALLOW),
    ];
    for r in rules {
        // ld nr, jeq, then per argument: ld, and, jeq; then ret.
        let len = 2 + 3 * r.args.len() + 1;
        let skip = |at: usize| u8::try_from(len - at - 1).expect("a short rule");
        p.push(stmt(LD_W_ABS, 0));
        p.push(jump(JEQ_K, r.nr, 0, skip(1)));
        for (i, a) in r.args.iter().enumerate() {
            let at = 2 + 3 * i;
            p.push(stmt(LD_W_ABS, ARGS_AT + 8 * u32::from(a.index)));
            p.push(stmt(AND_K, a.mask));
            p.push(jump(JEQ_K, a.value, 0, skip(at + 2)));
        }
        p.push(stmt(RET_K, ERRNO | (r.errno as u32 & 0xffff)));
    }
    p.push(stmt(RET_K, ALLOW));
    p
}

/// Installs the filter on the calling thread (and the threads it spawns afterwards); only
/// prctl(2) is called, so it is safe between fork and exec too.
fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid sock_fprog whose filter outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes the calling thread (and threads it spawns from now on) refuse what `rules` say. Call
/// it on a thread of the test's own: the filter cannot be removed.
pub fn refuse_in_this_thread(rules: &[Rule]) {
    install(&program(rules)).expect("installing the seccomp filter");
}

/// Makes `cmd`'s child refuse what `rules` say; every other syscall is allowed.
pub fn refuse<'a>(cmd: &'a mut Command, rules: &[Rule]) -> &'a mut Command {
    let filter = program(rules);
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
    // which is async-signal-safe; `filter` was built before the fork and is moved into the
    // closure, which outlives both calls.
    unsafe { cmd.pre_exec(move || install(&filter)) }
}

/// Docker's default profile: `io_uring_setup`, `io_uring_enter` and `io_uring_register`
/// refused with EPERM.
pub fn io_uring_rules() -> Vec<Rule> {
    [nr::IO_URING_SETUP, nr::IO_URING_ENTER, nr::IO_URING_REGISTER]
        .into_iter()
        .map(|n| Rule::syscall(n, libc::EPERM))
        .collect()
}

/// Makes the calling thread (and threads it spawns from now on, such as an engine's shard
/// threads) refuse io_uring with EPERM.
pub fn refuse_io_uring_in_this_thread() {
    refuse_in_this_thread(&io_uring_rules());
}

/// Makes `cmd`'s child refuse `io_uring_setup`, `io_uring_enter` and `io_uring_register`
/// with EPERM; every other syscall is allowed.
pub fn refuse_io_uring(cmd: &mut Command) -> &mut Command {
    refuse(cmd, &io_uring_rules())
}

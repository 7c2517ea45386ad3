//! A seccomp filter that refuses io_uring with EPERM, as Docker's default profile does,
//! installed in a child process before it execs (`Command::pre_exec`). Included by path
//! from the test crates that start `porto` under it.
// Each including test crate uses one of the two installers.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const NR_IO_URING_SETUP: u32 = 425;
const NR_IO_URING_REGISTER: u32 = 427;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const FILTER_LEN: usize = 8;

/// The filter: EPERM for syscalls 425..=427 on x86-64, every other syscall allowed.
fn filter() -> [libc::sock_filter; FILTER_LEN] {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const JGT_K: u16 = 0x25;
    const RET_K: u16 = 0x06;
    const ALLOW: u32 = 0x7fff_0000;
    const ERRNO: u32 = 0x0005_0000;
    [
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, ALLOW),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
        jump(JGE_K, NR_IO_URING_SETUP, 0, 2),
        jump(JGT_K, NR_IO_URING_REGISTER, 1, 0),
        stmt(RET_K, ERRNO | libc::EPERM as u32),
        stmt(RET_K, ALLOW),
    ]
}

/// Installs `filter` on the calling thread (and the threads it spawns afterwards); only
/// prctl(2) is called, so it is safe between fork and exec too.
fn install(filter: &[libc::sock_filter; FILTER_LEN]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: FILTER_LEN as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid sock_fprog that outlives the call.
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

/// Makes the calling thread (and threads it spawns from now on, such as an engine's shard
/// threads) refuse io_uring with EPERM. Call it on a thread of the test's own: the filter
/// cannot be removed.
pub fn refuse_io_uring_in_this_thread() {
    install(&filter()).expect("installing the seccomp filter");
}

/// Makes `cmd`'s child refuse `io_uring_setup`, `io_uring_enter` and `io_uring_register`
/// (syscalls 425..=427 on x86-64) with EPERM; every other syscall is allowed.
pub fn refuse_io_uring(cmd: &mut Command) -> &mut Command {
    let filter = filter();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
    // which is async-signal-safe; `filter` is moved into the closure and outlives both calls.
    unsafe { cmd.pre_exec(move || install(&filter)) }
}

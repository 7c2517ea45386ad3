//! The io_uring instance of one shard: set-up with a capability ladder, SQE push, submission,
//! waiting, completion reaping with CQ-overflow accounting, and buffer registration.
//!
//! ```text
//!   shard thread ──push(SQE)──► SQ ring ──io_uring_enter──► kernel
//!   shard thread ◄──reap(CQE)── CQ ring ◄── completions (overflow list if CQ full)
//! ```
//!
//! With `IORING_SETUP_DEFER_TASKRUN` the kernel runs completion work only inside an
//! `io_uring_enter` that carries `IORING_ENTER_GETEVENTS`; so every submission here passes it,
//! even a non-blocking one. With `IORING_FEAT_NODROP` an overflowing CQ parks completions in
//! the kernel; they come back only through such an enter, which `reap` triggers whenever the
//! `IORING_SQ_CQ_OVERFLOW` flag is up. Nothing is lost and nothing stalls.

use std::io;
use std::time::Duration;

use io_uring::{cqueue, squeue, types, IoUring};

use super::bufring::BufRing;
use super::region::Region;

/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;
/// `IORING_SEND_ZC_REPORT_USAGE` (zc_flags of SEND_ZC).
pub(crate) const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a SEND_ZC notification's result when the kernel
/// had to copy after all.
pub(crate) const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// How the kernel runs completion work for this ring; reported in [`RingInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRunMode {
    /// SINGLE_ISSUER + DEFER_TASKRUN: completion work runs only when the shard asks.
    Deferred,
    /// COOP_TASKRUN: no IPI, work runs at the next kernel transition.
    Cooperative,
    /// Plain task work (signals the task).
    Signal,
    /// A kernel SQ polling thread submits and completes.
    SqPoll,
}

impl std::fmt::Display for TaskRunMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskRunMode::Deferred => "single-issuer+defer-taskrun",
            TaskRunMode::Cooperative => "coop-taskrun",
            TaskRunMode::Signal => "default task work",
            TaskRunMode::SqPoll => "sqpoll",
        })
    }
}

/// Ring parameters asked for.
#[derive(Clone, Debug)]
pub(crate) struct RingConfig {
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// SQPOLL with this idle time in milliseconds, pinned to `sqpoll_cpu` if given.
    pub sqpoll_idle_ms: Option<u32>,
    pub sqpoll_cpu: Option<u32>,
}

/// What the kernel actually gave.
#[derive(Clone, Debug)]
pub struct RingInfo {
    pub task_run: TaskRunMode,
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// Why a better mode was not obtained, if it was not.
    pub fallback: Option<String>,
}

/// Sets the set-up flags of one rung of the ladder.
type ApplyFlags = fn(&mut io_uring::Builder);

pub(crate) struct Ring {
    ring: IoUring,
    info: RingInfo,
    /// Times the CQ overflow flag was seen up (completions parked in the kernel).
    overflows: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("info", &self.info).finish()
    }
}

impl Ring {
    /// Creates the ring on the calling thread (with SINGLE_ISSUER, the only thread that may
    /// submit afterwards), walking down the ladder DEFER_TASKRUN -> COOP_TASKRUN -> plain.
    pub(crate) fn new(cfg: &RingConfig) -> io::Result<Ring> {
        if let Some(idle) = cfg.sqpoll_idle_ms {
            let mut b = IoUring::builder();
            b.setup_sqpoll(idle).setup_cqsize(cfg.cq_entries);
            if let Some(cpu) = cfg.sqpoll_cpu {
                b.setup_sqpoll_cpu(cpu);
            }
            let ring = b.build(cfg.sq_entries)?;
            return Ok(Ring::with(ring, TaskRunMode::SqPoll, None));
        }
        let mut reasons = Vec::new();
        let ladder: [(TaskRunMode, ApplyFlags); 3] = [
            (TaskRunMode::Deferred, |b| {
                b.setup_single_issuer().setup_defer_taskrun().setup_taskrun_flag();
            }),
            (TaskRunMode::Cooperative, |b| {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }),
            (TaskRunMode::Signal, |_| {}),
        ];
        for (mode, apply) in ladder {
            let mut b = IoUring::builder();
            b.setup_cqsize(cfg.cq_entries).setup_submit_all();
            apply(&mut b);
            match b.build(cfg.sq_entries) {
                Ok(ring) => {
                    let fallback = (!reasons.is_empty()).then(|| reasons.join("; "));
                    if let Some(why) = &fallback {
                        tracing::warn!(mode = %mode, why = %why, "io_uring fell back");
                    }
                    return Ok(Ring::with(ring, mode, fallback));
                }
                Err(e) if mode != TaskRunMode::Signal => reasons.push(format!("{mode}: {e}")),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the ladder ends with a mode that returns")
    }

    fn with(ring: IoUring, task_run: TaskRunMode, fallback: Option<String>) -> Ring {
        let info = RingInfo {
            task_run,
            sq_entries: ring.params().sq_entries(),
            cq_entries: ring.params().cq_entries(),
            fallback,
        };
        Ring {
            ring,
            info,
            overflows: 0,
        }
    }

    /// A duplicate of the ring's fd (MSG_RING's target; it keeps the ring alive).
    pub(crate) fn dup_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsRawFd;
        // SAFETY: the ring's fd is open while `self` lives; it is only borrowed to be
        // duplicated.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.ring.as_raw_fd()) }.try_clone_to_owned()
    }

    pub(crate) fn info(&self) -> &RingInfo {
        &self.info
    }

    pub(crate) fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Queues one SQE, submitting first if the SQ is full.
    ///
    /// # Safety
    /// Every pointer in `entry` (buffers, msghdr, sockaddr, iovec, timespec) must stay valid,
    /// and every buffer the kernel writes must not be accessed by anyone else, until the
    /// kernel posts the operation's final completion (for SEND_ZC: its notification).
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded to the caller's contract.
        unsafe { self.push_all(std::slice::from_ref(entry)) }
    }

    /// Queues a chain of SQEs (an IO_LINK head and its LinkTimeout) all at once or not at
    /// all: room for every entry is made first (by submitting what is queued), then they are
    /// written and the tail published in one step, so neither a full SQ nor an SQPOLL thread
    /// can ever see the head without the rest of its chain. An error means none was queued.
    ///
    /// # Safety
    /// As for [`push`](Self::push), for every entry.
    pub(crate) unsafe fn push_all(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        loop {
            // SAFETY: forwarded to the caller's contract. `push_multiple` writes all or none;
            // the tail is stored once, when the SubmissionQueue borrow drops.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                return Ok(());
            }
            if entries.len() > self.info.sq_entries as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an SQE chain longer than the SQ",
                ));
            }
            self.enter(0, None)?;
        }
    }

    /// Submits what is queued and runs completion work, without waiting.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        self.enter(0, None)
    }

    /// Like [`submit`](Self::submit), but skips the syscall when there is nothing to submit,
    /// no completion work pending (IORING_SQ_TASKRUN, set by the kernel with
    /// IORING_SETUP_TASKRUN_FLAG) and no CQ overflow: a busy-polling loop then stays in user
    /// space until the kernel has something for it.
    pub(crate) fn submit_if_needed(&mut self) -> io::Result<()> {
        let sq = self.ring.submission();
        let needed = !sq.is_empty() || sq.taskrun() || sq.cq_overflow() || self.info.task_run == TaskRunMode::Signal;
        drop(sq);
        if needed {
            self.enter(0, None)
        } else {
            Ok(())
        }
    }

    /// Submits and waits for at least one completion, or for `timeout`.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.enter(1, timeout)
    }

    fn enter(&mut self, want: u32, timeout: Option<Duration>) -> io::Result<()> {
        let res = if self.info.task_run == TaskRunMode::SqPoll {
            match timeout {
                Some(t) => {
                    let ts = types::Timespec::from(t);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(want as usize, &args)
                }
                None => self.ring.submitter().submit_and_wait(want as usize),
            }
        } else {
            let to_submit = self.ring.submission().len() as u32;
            match timeout {
                Some(t) if want > 0 => {
                    let ts = types::Timespec::from(t);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(want as usize, &args)
                }
                // SAFETY: plain io_uring_enter with no argument struct.
                _ => unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(to_submit, want, ENTER_GETEVENTS, None)
                },
            }
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // A timed-out or interrupted wait, or a busy CQ that reap will drain: not errors.
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Completions are waiting in the CQ (or parked in the overflow list).
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty() || self.ring.submission().cq_overflow()
    }

    /// Moves every available CQE into `out` (cleared first), flushing the kernel's overflow
    /// list when the CQ overflowed. Returns the number reaped.
    pub(crate) fn reap(&mut self, out: &mut Vec<cqueue::Entry>) -> usize {
        out.clear();
        loop {
            {
                let mut cq = self.ring.completion();
                cq.sync();
                let room = out.capacity() - out.len();
                out.extend(cq.by_ref().take(room));
            }
            if !self.ring.submission().cq_overflow() {
                return out.len();
            }
            self.overflows += 1;
            if out.len() == out.capacity() {
                // The caller handles these first; the next turn's enter flushes the rest.
                return out.len();
            }
            // Completions are parked in the kernel: an enter with GETEVENTS moves them into
            // the CQ we just emptied.
            if let Err(e) = self.enter(0, None) {
                tracing::error!(error = %e, "io_uring_enter failed while flushing CQ overflow");
                return out.len();
            }
        }
    }

    /// Creates an empty fixed-buffer table of `slots` entries (slot 0: the pool; the rest
    /// for Registered I/O buffers).
    pub(crate) fn register_buffer_table(&mut self, slots: u32) -> io::Result<()> {
        self.ring.submitter().register_buffers_sparse(slots)
    }

    /// Registers the whole region as fixed buffer 0 (the pool).
    pub(crate) fn register_region(&mut self, region: &Region) -> io::Result<()> {
        let iov = libc::iovec {
            iov_base: region.as_ptr().cast(),
            iov_len: region.len(),
        };
        // SAFETY: the region outlives the ring: both belong to the shard, and the shard drops
        // its ring before its pool's region (field order), so the kernel never sees freed memory.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(0, std::slice::from_ref(&iov), None)
        }?;
        Ok(())
    }

    /// Registers `len` bytes at `ptr` as fixed buffer `slot`.
    ///
    /// # Safety
    /// The memory must stay mapped until the slot is cleared with `unregister_slot` or the
    /// ring is dropped.
    pub(crate) unsafe fn register_slot(&mut self, slot: u32, ptr: *mut u8, len: usize) -> io::Result<()> {
        let iov = libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        };
        // SAFETY: forwarded to the caller's contract.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(slot, std::slice::from_ref(&iov), None)
        }
        .map(|_| ())
    }

    /// Clears fixed buffer `slot`.
    pub(crate) fn unregister_slot(&mut self, slot: u32) -> io::Result<()> {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: a null iovec clears the slot; no memory is handed to the kernel.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(slot, std::slice::from_ref(&iov), None)
        }
        .map(|_| ())
    }

    /// Creates an empty registered-file table of `slots` entries (one per socket slot).
    pub(crate) fn register_file_table(&mut self, slots: u32) -> io::Result<()> {
        self.ring.submitter().register_files_sparse(slots)
    }

    /// Puts `fd` in file slot `slot` (-1 clears it). Operations already submitted keep the
    /// file they resolved; the table holds its own reference until the slot is cleared.
    pub(crate) fn set_file(&mut self, slot: u32, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.ring.submitter().register_files_update(slot, &[fd]).map(|_| ())
    }

    /// Registers a provided-buffer ring under group `bgid`.
    pub(crate) fn register_buf_ring(&mut self, br: &BufRing, bgid: u16) -> io::Result<()> {
        // SAFETY: the BufRing is owned by the shard next to this ring and dropped after it.
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(br.addr(), br.entries(), bgid, 0)
        }
    }
}

/// One kernel feature as a probe found it: `Ok(true)` present, `Ok(false)` absent (the
/// kernel does not have it), `Err` refused or failed (the errno says which).
#[derive(Debug)]
pub(crate) struct Probed {
    pub name: &'static str,
    pub got: io::Result<bool>,
}

fn probed(name: &'static str, got: io::Result<bool>) -> Probed {
    Probed { name, got }
}

/// EINVAL from a set-up flag or a registration opcode means this kernel does not know it.
fn known(r: io::Result<()>) -> io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every io_uring feature porto uses, tried on throwaway rings: set-up and its modes, the
/// feature bits, the opcodes (IORING_REGISTER_PROBE) and each registration a shard makes.
/// A seccomp filter or a hardened kernel shows here as `Err`. (EINVAL is read as absent:
/// a filter that answers EINVAL looks like an older kernel, which is what porto must treat
/// it as anyway.)
pub(crate) fn probe() -> Vec<Probed> {
    let mut out = Vec::new();
    let ring: IoUring = match IoUring::builder().setup_cqsize(8).build(4) {
        Ok(r) => r,
        Err(e) => {
            out.push(probed("io_uring_setup", Err(e)));
            return out;
        }
    };
    out.push(probed("io_uring_setup", Ok(true)));
    let mode = |apply: ApplyFlags| {
        let mut b = IoUring::builder();
        apply(&mut b);
        known(b.build(4).map(|r: IoUring| drop(r)))
    };
    out.push(probed(
        "setup: single-issuer + defer-taskrun",
        mode(|b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
    ));
    out.push(probed(
        "setup: coop-taskrun",
        mode(|b| {
            b.setup_coop_taskrun();
        }),
    ));
    out.push(probed(
        "setup: sqpoll",
        mode(|b| {
            b.setup_sqpoll(10);
        }),
    ));
    let p = ring.params();
    out.push(probed(
        "feature: nodrop (no lost completions)",
        Ok(p.is_feature_nodrop()),
    ));
    out.push(probed("feature: ext_arg (timed waits)", Ok(p.is_feature_ext_arg())));
    out.push(probed("feature: recvsend_bundle", Ok(p.is_feature_recvsend_bundle())));
    out.push(probed("feature: min_timeout", Ok(p.is_feature_min_timeout())));
    let mut opcodes = io_uring::Probe::new();
    match ring.submitter().register_probe(&mut opcodes) {
        Ok(()) => {
            out.push(probed("IORING_REGISTER_PROBE", Ok(true)));
            use io_uring::opcode as op;
            for (name, code) in [
                ("op: recvmsg (multishot)", op::RecvMsgMulti::CODE),
                ("op: recv", op::Recv::CODE),
                ("op: sendmsg", op::SendMsg::CODE),
                ("op: send", op::Send::CODE),
                ("op: send_zc", op::SendZc::CODE),
                ("op: accept", op::Accept::CODE),
                ("op: connect", op::Connect::CODE),
                ("op: shutdown", op::Shutdown::CODE),
                ("op: async_cancel", op::AsyncCancel::CODE),
                ("op: link_timeout", op::LinkTimeout::CODE),
                ("op: poll_add", op::PollAdd::CODE),
                ("op: read", op::Read::CODE),
                ("op: msg_ring", op::MsgRingData::CODE),
            ] {
                out.push(probed(name, Ok(opcodes.is_supported(code))));
            }
        }
        Err(e) => out.push(probed("IORING_REGISTER_PROBE", Err(e))),
    }
    let sub = ring.submitter();
    out.push(probed(
        "fixed buffers (IORING_REGISTER_BUFFERS2)",
        known(sub.register_buffers_sparse(2)),
    ));
    let fixed = match Region::new(4096, false) {
        Ok(r) => {
            let iov = libc::iovec {
                iov_base: r.as_ptr().cast(),
                iov_len: r.len(),
            };
            // SAFETY: the slot is cleared below, before `r` (the region) is unmapped at the
            // end of this arm; nothing is submitted that could use it meanwhile.
            let got = unsafe { sub.register_buffers_update(0, std::slice::from_ref(&iov), None) }.map(drop);
            let clear = libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            // SAFETY: a null iovec clears the slot before the region is unmapped.
            let _ = unsafe { sub.register_buffers_update(0, std::slice::from_ref(&clear), None) };
            known(got)
        }
        Err(e) => Err(e),
    };
    out.push(probed("fixed buffer update (IORING_REGISTER_BUFFERS_UPDATE)", fixed));
    out.push(probed(
        "registered files (IORING_REGISTER_FILES2)",
        known(sub.register_files_sparse(4)),
    ));
    let bufring = BufRing::new(8).and_then(|br| {
        // SAFETY: the ring is unregistered before `br` is unmapped (or `br` is leaked if the
        // kernel will not let go); no receive is submitted that could pick from it.
        let r = unsafe { sub.register_buf_ring_with_flags(br.addr(), br.entries(), 7, 0) };
        if r.is_ok() && sub.unregister_buf_ring(7).is_err() {
            std::mem::forget(br);
        }
        r
    });
    out.push(probed(
        "provided-buffer ring (IORING_REGISTER_PBUF_RING)",
        known(bufring),
    ));
    out
}

/// Why `io_uring_setup` said EPERM, and the fix: `kernel.io_uring_disabled` (Linux 6.6+) if
/// set, else a seccomp filter — Docker's default profile refuses io_uring.
pub(crate) fn refused_fix() -> &'static str {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_default();
    match sysctl.trim() {
        "2" => "kernel.io_uring_disabled = 2 turns io_uring off for every process: set it to 0",
        "1" => {
            "kernel.io_uring_disabled = 1 allows io_uring only to root and to the group in \
             kernel.io_uring_group: add this user to that group, or set the sysctl to 0"
        }
        _ => {
            "a seccomp filter refuses io_uring (Docker's and Podman's default profiles do): run the \
             container with a profile that allows io_uring_setup, io_uring_enter and io_uring_register \
             (e.g. --security-opt seccomp=unconfined)"
        }
    }
}

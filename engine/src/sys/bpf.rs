//! Probes of what the running kernel lets an XDP program do, by loading a few-instruction
//! program with `bpf(BPF_PROG_LOAD)` and reading the verifier's answer. Kernels differ in the
//! helpers they give XDP programs (this project met one that refuses `bpf_xdp_adjust_meta`
//! to every program), so the loader asks before it loads porto's program and gates what the
//! kernel refuses.

use std::io;

/// `enum bpf_prog_type`: BPF_PROG_TYPE_XDP.
const PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_cmd`: BPF_PROG_LOAD.
const CMD_PROG_LOAD: libc::c_int = 5;
/// `bpf_xdp_adjust_meta`'s helper id (`enum bpf_func_id`).
pub(crate) const HELPER_XDP_ADJUST_META: i32 = 54;
/// Verifier log room: the probe's log is a few lines.
const LOG_LEN: usize = 4096;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}
const _: () = assert!(std::mem::size_of::<Insn>() == 8);

/// The head of `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type` (the kernel
/// takes a shorter attr than its own and zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Why the kernel refused a probe program: its errno and the verifier's last lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub errno: i32,
    pub verifier: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if !self.verifier.is_empty() {
            write!(f, " (verifier: {})", self.verifier)?;
        }
        Ok(())
    }
}

/// The last non-empty lines of a verifier log (at most `n`), joined by " | ", without the
/// verifier's closing statistics ("processed N insns ...").
pub(crate) fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("processed "))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Loads `r2 = -16; call helper; r0 = XDP_PASS; exit` as an XDP program (r1 is the context,
/// as every context-taking XDP helper wants) and unloads it at once. `Ok` when the kernel
/// accepts the call; the refusal otherwise (EPERM/EACCES when BPF itself is not allowed).
pub(crate) fn probe_xdp_helper(helper: i32) -> Result<(), Refusal> {
    const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const XDP_PASS: i32 = 2;
    let insns = [
        Insn {
            code: MOV64_IMM,
            regs: 2,
            off: 0,
            imm: -16,
        },
        Insn {
            code: CALL,
            regs: 0,
            off: 0,
            imm: helper,
        },
        Insn {
            code: MOV64_IMM,
            regs: 0,
            off: 0,
            imm: XDP_PASS,
        },
        Insn {
            code: EXIT,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let mut log = vec![0u8; LOG_LEN];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"porto_probe");
    let attr = ProgLoadAttr {
        prog_type: PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: LOG_LEN as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `attr` is a valid BPF_PROG_LOAD head whose pointers (instructions, license,
    // log of LOG_LEN bytes) outlive the call; the kernel reads at most `size_of` bytes of it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            CMD_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as u32,
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just gave us this fd; nothing else owns it.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    Err(Refusal {
        errno,
        verifier: last_lines(&String::from_utf8_lossy(&log[..end]), 2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_tail_without_blanks() {
        let log = "0: R1=ctx()\n\n360: (85) call bpf_xdp_adjust_meta#54\nprogram of this type cannot use helper bpf_xdp_adjust_meta#54\nprocessed 12 insns\n";
        assert_eq!(
            last_lines(log, 2),
            "360: (85) call bpf_xdp_adjust_meta#54 | program of this type cannot use helper bpf_xdp_adjust_meta#54"
        );
        assert_eq!(last_lines("", 3), "");
    }

    /// The probe gives a definite answer on any kernel: accepted, refused by the verifier
    /// (EINVAL with its reason), or BPF not allowed to this process (EPERM/EACCES).
    #[test]
    fn the_adjust_meta_probe_answers() {
        match probe_xdp_helper(HELPER_XDP_ADJUST_META) {
            Ok(()) => {}
            Err(r) if r.errno == libc::EINVAL => assert!(r.verifier.contains("adjust_meta"), "{r}"),
            Err(r) => assert!(matches!(r.errno, libc::EPERM | libc::EACCES), "{r}"),
        }
        // A helper id no kernel has is refused by the verifier, with its words.
        let r = probe_xdp_helper(100_000).unwrap_err();
        assert!(matches!(r.errno, libc::EINVAL | libc::EPERM | libc::EACCES), "{r}");
    }
}

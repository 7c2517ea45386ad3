//! Replays every committed fuzz corpus file (`engine/fuzz/corpus/<target>/`) through its
//! target on stable, so inputs a fuzzer found (and the seeds) stay covered by `cargo test`.

use std::path::Path;

use porto_engine::wire::{parse_udp, DropReason};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("parse_udp", porto_engine::fuzz::parse_udp),
    ("recvmsg_out", porto_engine::fuzz::recvmsg_out),
    ("tos_from_cmsgs", porto_engine::fuzz::tos_from_cmsgs),
    ("sockaddr", porto_engine::fuzz::sockaddr),
    ("xsk_rx_claims", porto_engine::fuzz::xsk_rx_claims),
];

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_replays_without_a_finding() {
    for (target, run) in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "{target}: no corpus");
        for (name, data) in &files {
            let r = std::panic::catch_unwind(|| run(data));
            assert!(r.is_ok(), "{target}/{name} fails");
        }
        eprintln!("{target}: {} corpus files replayed", files.len());
    }
}

/// The seeds are real frames: the valid ones parse, the malformed ones fail for their reason
/// (so the corpus starts the fuzzer on both sides of every check).
#[test]
fn seed_frames_are_what_their_names_say() {
    let get = |n: &str| {
        corpus("parse_udp")
            .into_iter()
            .find(|f| f.0 == n)
            .unwrap_or_else(|| panic!("seed {n}"))
            .1
    };
    for ok in [
        "v4_sockperf_64",
        "v4_empty",
        "v4_1472",
        "v4_multicast",
        "v6_sockperf_64",
        "v6_multicast",
    ] {
        assert!(
            parse_udp(&get(ok), 1 << 16).is_ok(),
            "{ok}: {:?}",
            parse_udp(&get(ok), 1 << 16)
        );
    }
    for (bad, why) in [
        ("v4_partial_checksum", DropReason::PartialUdpChecksum),
        ("v4_fragment", DropReason::Fragment),
        ("v4_truncated", DropReason::BadIpLength),
        ("vlan", DropReason::VlanTagged),
        ("arp", DropReason::NotIp),
    ] {
        assert_eq!(parse_udp(&get(bad), 1 << 16).unwrap_err(), why, "{bad}");
    }
}

//! The committed XDP objects are fresh: each source matches the SHA-256 in its object's
//! stamp, and with the same clang installed a rebuild is byte-identical.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/packages.rs"]
mod packages;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../xdp-programs")
}

fn stamp(obj: &Path) -> (String, String) {
    let text = std::fs::read_to_string(obj.with_extension("o.stamp"))
        .unwrap_or_else(|_| panic!("{} has no stamp", obj.display()));
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("stamp lacks {k}"))
            .trim()
            .to_string()
    };
    (field("source-sha256 "), field("clang "))
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum (coreutils) runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

fn sources() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no XDP sources");
    v
}

#[test]
fn every_object_was_built_from_its_current_source() {
    for src in sources() {
        let obj = src.with_extension("o");
        assert!(obj.exists(), "{} is not built: run make -C xdp-programs", obj.display());
        let (digest, _) = stamp(&obj);
        assert_eq!(
            digest,
            sha256(&src),
            "{} changed since {} was built: run make -C xdp-programs",
            src.display(),
            obj.display()
        );
    }
}

#[test]
fn rebuild_with_the_same_clang_is_identical() {
    if !packages::require_packages(&["clang", "libbpf-dev", "make"], "rebuilding the XDP objects") {
        return;
    }
    let out = Command::new("clang").arg("--version").output().expect("clang runs");
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let tmp = std::env::temp_dir().join(format!("porto-xdp-rebuild-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut checked = 0;
    for src in sources() {
        let obj = src.with_extension("o");
        let (_, built_with) = stamp(&obj);
        if built_with != version {
            // Another clang emits other bytes: nothing to compare. CI's machine must have the
            // stamp's clang, or the objects must be rebuilt with its own.
            assert!(
                !packages::strict(),
                "{} was built with {built_with}, this machine has {version}: rebuild it (make -C xdp-programs) with the clang CI installs",
                obj.display()
            );
            eprintln!(
                "skipping {}: built with {built_with}, this machine has {version}",
                obj.display()
            );
            continue;
        }
        let out = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(dir())
            .arg(format!("OUT={}", tmp.display()))
            .output()
            .expect("make runs");
        assert!(
            out.status.success(),
            "make -C xdp-programs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fresh = std::fs::read(tmp.join(obj.file_name().unwrap())).unwrap();
        assert!(
            fresh == std::fs::read(&obj).unwrap(),
            "{} is stale: run make -C xdp-programs and commit it",
            obj.display()
        );
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(checked > 0 || !packages::strict(), "no object rebuilt");
    eprintln!("{checked} object(s) rebuilt and identical");
}

//! The Debian packages tests need, checked against the one list `scripts/test.sh` installs
//! from (`scripts/test-packages.txt`). Included by path from every test crate that needs it.

use std::path::Path;
use std::process::{Command, Stdio};

/// PORTO_REQUIRE_NETNS=1 (CI): a missing capability fails the test instead of skipping it.
pub fn strict() -> bool {
    std::env::var("PORTO_REQUIRE_NETNS").as_deref() == Ok("1")
}

/// The package names of `scripts/test-packages.txt`.
pub fn listed() -> Vec<String> {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-packages.txt");
    std::fs::read_to_string(&list)
        .unwrap_or_else(|e| panic!("{}: {e}", list.display()))
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// True if every package in `names` is installed. A package missing from the list fails at
/// once (scripts/test.sh would never install it); one listed but not installed is a skip,
/// said on stderr, or a failure naming it under `strict()`.
pub fn require_packages(names: &[&str], why: &str) -> bool {
    let list = listed();
    for n in names {
        assert!(
            list.iter().any(|l| l == n),
            "this test needs the Debian package {n} ({why}); add it to scripts/test-packages.txt"
        );
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            !Command::new("dpkg")
                .args(["-s", n])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !strict(),
        "PORTO_REQUIRE_NETNS=1 but {missing:?} not installed ({why}): run scripts/test.sh"
    );
    eprintln!("skipping: {missing:?} not installed ({why}); scripts/test.sh installs them");
    false
}

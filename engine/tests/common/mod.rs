//! Helpers shared by the namespace tests (each test file includes this module).

use porto_engine::netns::Topology;

/// PORTO_REQUIRE_NETNS=1 (CI): a missing capability fails the test instead of skipping it.
pub fn strict() -> bool {
    std::env::var("PORTO_REQUIRE_NETNS").as_deref() == Ok("1")
}

/// Two namespaces joined by a veth pair with `queues` queues, deleted on drop; `None` (a
/// skip, said on stderr) where this machine cannot make them, unless `strict()`.
pub fn topology(prefix: &str, queues: u32) -> Option<Topology> {
    match Topology::create(prefix, queues) {
        Ok(t) => Some(t),
        Err(e) => {
            assert!(!strict(), "PORTO_REQUIRE_NETNS=1 but: {e}");
            eprintln!("skipping: {e}");
            None
        }
    }
}

//! `include/porto.h` is what cbindgen makes of this crate now: a changed signature without a
//! regenerated header fails here. `PORTO_BLESS=1 cargo test -p porto-ffi --test header`
//! rewrites it.

use std::path::Path;

#[test]
fn the_committed_header_is_fresh() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let cfg = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml")).expect("cbindgen.toml");
    let mut made = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(cfg)
        .generate()
        .expect("cbindgen parses the crate")
        .write(&mut made);
    let path = Path::new(dir).join("../include/porto.h");
    if std::env::var_os("PORTO_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == made,
        "include/porto.h is stale: regenerate it with `PORTO_BLESS=1 cargo test -p porto-ffi --test header` and commit it"
    );
}

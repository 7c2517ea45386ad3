//! criterion micro-benchmarks for porto live in `benches/`; this crate has no library code.

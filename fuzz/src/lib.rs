//! Shared by the fuzz targets: the invariants live in `checks.rs`, which the main crate's
//! `tests/fuzz_corpus.rs` includes too.
pub mod checks;

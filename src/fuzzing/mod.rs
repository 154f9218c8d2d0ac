//! Fuzz target bodies. Each takes arbitrary bytes, decodes what to do from them with
//! [`ByteReader`], and panics only when an invariant of the library is broken. The cargo-fuzz
//! crate in `fuzz/` calls them from libFuzzer; `tests/fuzz_bodies.rs` runs them on stable over
//! generated inputs and the checked-in corpus, so CI covers them without nightly.
//! `docs/fuzzing.md` lists what each target checks.
//!
//! | target            | drives                                                        |
//! |-------------------|---------------------------------------------------------------|
//! | `decode_batch`    | `BatchHeader::decode`, `BatchView::parse`, records, round trip |
//! | `decode_snapshot` | `format::snapshot::decode`, re-encode round trip              |
//! | `decode_index`    | offset/time index and checkpoint decoders, round trips        |
//! | `decode_offsets`  | consumer-offset records and `OffsetsState::apply_batch`       |
//! | `recover_segment` | `scan_segment` on damaged images; `Log::open` after power loss |
//! | `log_model`       | `Log` operations, crashes and I/O faults against a `Vec` model |
//! | `decode_wire`     | `net::wire` frame decoding, canonical round trip (stable body only) |
//! | `decode_txn_record` | coordinator state records: invariants, canonical round trip |
//! | `decode_controller_record` | the etcd controller record: invariants, canonical round trip (stable body only) |
//!
//! `decode_batch` tolerates a re-encoding that keeps the records (see
//! [`decoders::KNOWN_BATCH_FINDINGS`], both fixed); `decode_batch_strict` demands the exact
//! bytes. `log_model` tolerates nothing.

mod decoders;
mod model;
mod offsets;
mod reader;
mod recover;
mod txn_record;
#[cfg(feature = "net")]
mod wire;

pub use decoders::{
    decode_batch, decode_batch_strict, decode_index, decode_snapshot, KNOWN_BATCH_FINDINGS,
};
pub use model::log_model;
pub use offsets::decode_offsets;
pub use reader::ByteReader;
pub use recover::recover_segment;
pub use txn_record::{decode_txn_record, join_input as txn_record_input};
#[cfg(feature = "net")]
pub use wire::{decode_controller_record, decode_wire};

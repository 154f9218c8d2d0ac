//! The transaction coordinator: decides transactions across partitions and writes their
//! markers. Its state is itself an oncelog log (the transaction-state log).

pub mod markers;

pub use markers::MarkerSink;

//! Appends ~1 GB of 1 KB × 64 batches (64 KB each) with 256 MiB segments in `SyncMode::Os`, for
//! looking at what the appender waits for at a roll, e.g.
//!
//! ```text
//! cargo build --release --example append_rolls
//! strace -f -T -e trace=fdatasync,fsync,msync,rename,fallocate \
//!     target/release/examples/append_rolls /tmp/oncelog-rolls
//! ```
//!
//! The main thread is the appender (its strace lines carry the process id). Prints the elapsed
//! time and how the rolls got their segment (`Log::roll_stats`). The directory is removed first
//! and last.

use std::time::Instant;

use oncelog::{BatchBuilder, Log, LogConfig, SyncMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/oncelog-append-rolls".into());
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LogConfig {
        segment_bytes: 256 << 20,
        sync: SyncMode::Os,
        retention_ms: None,
        segment_ms: None,
        max_batch_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, cfg)?;
    // 64 distinct batches of 64 records of 1,000 bytes of xorshift noise, cycled.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let pool: Vec<_> = (0..64)
        .map(|_| {
            let mut b = BatchBuilder::new();
            for _ in 0..64 {
                let v: Vec<u8> = (0..1000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                b.push(0, None, Some(&v));
            }
            b.build()
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for i in 0..15_625 {
        log.append(&pool[i % pool.len()])?;
    }
    let elapsed = start.elapsed();
    println!(
        "appended {} bytes in {:.3} s; {:?}",
        log.size_bytes(),
        elapsed.as_secs_f64(),
        log.roll_stats()
    );
    log.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

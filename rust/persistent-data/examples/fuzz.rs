//! Long-running corruption fuzzer:
//! `cargo run --profile fuzz --example fuzz -- SECONDS [SEED]`.
//! Each case corrupts a valid image and exercises open/lookup/modify; a
//! panic (caught) is reported with its seed.
use rthin_pdata::host::fuzz::{build_base, corrupt, exercise, Outcome};
use std::time::{Duration, Instant};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let mut seed: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let base = build_base();
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut cases, mut panics) = (0u64, 0u64);
    let mut total = Outcome::default();
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < end {
        let disk = base.snapshot();
        let what = corrupt(&disk, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&disk, seed))) {
            Ok(o) => {
                total.opened += o.opened;
                total.errors += o.errors;
                total.oks += o.oks;
                total.corrupt_errors += o.corrupt_errors;
            }
            Err(e) => {
                panics += 1;
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("PANIC seed {seed} corruption {what:?}: {msg}");
            }
        }
        cases += 1;
        seed += 1;
    }
    println!("cases {cases}, panics {panics}, {total:?}, last seed {seed}");
}

//! Bounded randomized corruption test: damaged metadata must give errors,
//! never panics or hangs. (The long-running variant is
//! `cargo run --release --example fuzz -- SECONDS`.)
use rthin_pdata::host::fuzz::{build_base, corrupt, exercise};

#[test]
fn corrupted_metadata_never_panics() {
    let base = build_base();
    let mut total = rthin_pdata::host::fuzz::Outcome::default();
    for seed in 1..=1500u64 {
        let disk = base.snapshot();
        let what = corrupt(&disk, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&disk, seed)));
        let o = r.unwrap_or_else(|_| panic!("panic with seed {seed}, corruption {what:?}"));
        total.opened += o.opened;
        total.errors += o.errors;
        total.oks += o.oks;
        total.corrupt_errors += o.corrupt_errors;
    }
    eprintln!("{total:?}");
    assert!(total.corrupt_errors > 0, "corruption was never detected");
    assert!(total.oks > 0);
}

#[test]
fn unmodified_base_is_consistent() {
    let base = build_base();
    let bm = rthin_pdata::host::HostBm::new(base, 1024, 1024);
    rthin_pdata::host::check::check(&bm).unwrap();
}

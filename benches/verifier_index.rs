//! Memory and lookup cost of the verifier's index, without an API server:
//! `cargo bench --bench verifier_index` (part of `make bench-verifier`).
//!
//! Builds an index of 100,000 live keys (`PAYI_BENCH_KEYS`) in 1,000 Groups of 10
//! Organizations, every tenth Application also holding a previous key, and
//! reports the bytes the index holds per key (counted by a global allocator) and
//! the time of one full check of a presented key (shape, checksum, SHA-256,
//! lookup). Figures go in docs/benchmark.md.
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use payi_operator::key::ApiKey;
use payi_operator::verifier::index::{AppId, ApplicationView, Decision, Index, KeyView, digest_of};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let apps: usize = std::env::var("PAYI_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mint = || ApiKey::mint().expect("minting a key").expose().to_string();
    let mut presented = Vec::with_capacity(apps);
    let views: Vec<ApplicationView> = (0..apps)
        .map(|i| {
            let key = mint();
            let mut keys = vec![KeyView { digest: digest_of(&key), expires_at_ms: None }];
            if i % 10 == 0 {
                keys.push(KeyView { digest: digest_of(&mint()), expires_at_ms: Some(i64::MAX) });
            }
            presented.push(key);
            ApplicationView {
                id: AppId { namespace: format!("team-{:03}", i % 500), name: format!("application-{i:06}") },
                group: format!("group-{:03}", i % 1_000),
                live: true,
                catching_up: false,
                keys,
                use_cases: Default::default(),
                limits: Default::default(),
            }
        })
        .collect();
    let total_keys: usize = views.iter().map(|v| v.keys.len()).sum();

    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut index = Index::default();
    for org in 0..10 {
        index.apply_organization(&format!("org-{org}"));
    }
    for group in 0..1_000 {
        index.apply_group(&format!("group-{group:03}"), &format!("org-{}", group % 10));
    }
    for view in &views {
        assert!(index.apply_application(view).is_empty());
    }
    let built = started.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(index.keys(), total_keys);

    let rounds = 1_000_000;
    let started = Instant::now();
    let mut allowed = 0usize;
    for i in 0..rounds {
        let key = &presented[(i * 7919) % presented.len()];
        allowed += usize::from(index.verify(Some(key), 0).decision == Decision::Allowed);
    }
    let per_check = started.elapsed() / rounds as u32;
    assert_eq!(allowed, rounds);

    println!("verifier index: {apps} Applications, {total_keys} live keys");
    println!("  built in {built:?}");
    println!(
        "  index memory: {:.1} MiB, {} bytes per key (Applications, Groups and Organizations included)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes / total_keys
    );
    println!("  one check (shape, checksum, SHA-256, lookup): {per_check:?}");
}

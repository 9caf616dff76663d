//! The hot path allocates nothing per record: through source -> batcher -> transport -> acks,
//! allocations grow with batches and messages, not with records. Measured with a counting global
//! allocator as the difference between two runs, so set-up costs cancel out.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_for(records: u64, batch: usize) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let seen = runtime.block_on(kps_benches::run_ingress(100, records, batch));
    assert!(seen >= records, "every record arrived");
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn allocations_grow_with_messages_not_records() {
    let per_record = |batch: usize| {
        let small = allocations_for(20_000, batch);
        let large = allocations_for(120_000, batch);
        large.saturating_sub(small) as f64 / 100_000.0
    };
    let batched = per_record(256);
    println!("allocations per record, 256 records per message: {batched:.4}");
    assert!(
        batched < 0.25,
        "{batched} allocations per record: something allocates per record"
    );
}

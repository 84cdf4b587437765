//! Allocator tuning for commands whose memory is measured against a target.
//!
//! glibc raises its mmap threshold each time a large block from `mmap` is
//! freed (to as much as 32 MiB), and sets the heap trim threshold to twice
//! that. A restore from object storage frees 4 MiB range windows and 1 MiB
//! chunks on every worker thread, so each thread's arena ends up keeping
//! 8 MiB or more of free memory it never returns: 67 MiB of peak RSS for a
//! heap that peaked at 29 MiB (60,963 files restored from S3). A fixed trim
//! threshold keeps glibc's initial thresholds (128 KiB for `mmap`), and the
//! same restore peaks at 44 MiB. A local restore's time does not change:
//! its chunk buffers are reused per thread (`store::read_chunk_with`), so
//! few blocks ever go through `mmap`. A backup does pay (a full of the
//! 0.9 GB benchmark set: 0.4 s more system time, 12% more wall time), and
//! its peak is under the target without this, so only restore calls it.

/// Heap memory above this at the top of an arena goes back to the system.
const TRIM_THRESHOLD: i32 = 1 << 20;

/// Make glibc hand freed memory back instead of keeping it per arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_freed_memory() {
    // SAFETY: mallopt only sets a tunable of glibc's allocator; it takes
    // no pointers and is safe to call at any time, from any thread. A
    // failure (0) leaves glibc's defaults, which are correct, only larger.
    let ok = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
    if ok == 0 {
        tracing::debug!("mallopt(M_TRIM_THRESHOLD) failed; keeping glibc's defaults");
    }
}

/// Other C libraries keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_freed_memory() {}

//! Memory that must not keep what it held.

/// Overwrites `bytes` with zeros in a way the compiler may not optimise out, even when
/// they are about to be freed.
pub(crate) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: a valid, aligned byte we hold a unique reference to.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

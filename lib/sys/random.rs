//! Random bytes from the kernel.

/// Fills `buf` from `getrandom(2)`; false if the kernel did not fill it all.
pub(crate) fn fill(buf: &mut [u8]) -> bool {
    // SAFETY: getrandom writes at most `buf.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    n == buf.len() as isize
}

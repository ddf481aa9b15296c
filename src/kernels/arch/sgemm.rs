//! Safe wrapper around `matrixmultiply::sgemm`, which picks AVX2/FMA or NEON at run time.

/// A row-major (or arbitrarily strided) matrix view: `data[i * rs + j * cs]` is element (i, j).
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// The mutable counterpart of [`MatRef`].
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return None;
    }
    Some((rows - 1) * rs + (cols - 1) * cs)
}

/// `c = alpha * a @ b + beta * c`.
///
/// Panics if the shapes disagree or a view reaches past its slice: both are programming
/// errors of the caller, never a property of the input data.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    assert_eq!(a.cols, b.rows, "sgemm: inner dimensions differ");
    assert_eq!(a.rows, c.rows, "sgemm: output rows differ");
    assert_eq!(b.cols, c.cols, "sgemm: output cols differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    for (name, len, last) in [
        ("a", a.data.len(), last_index(m, k, a.rs, a.cs)),
        ("b", b.data.len(), last_index(k, n, b.rs, b.cs)),
        ("c", c.data.len(), last_index(m, n, c.rs, c.cs)),
    ] {
        if let Some(last) = last {
            assert!(last < len, "sgemm: view {name} reaches index {last} of a slice of {len}");
        }
    }
    let strides = [a.rs, a.cs, b.rs, b.cs, c.rs, c.cs];
    assert!(strides.iter().all(|&s| s <= isize::MAX as usize), "sgemm: stride overflow");
    // SAFETY: every element matrixmultiply reads or writes is at (i*rs + j*cs) for i < rows,
    // j < cols of its view; the asserts above establish that the largest such index is inside
    // the slice, and the strides fit in isize. `a` and `b` are shared borrows and `c` a unique
    // borrow, so `c` aliases neither. With k == 0 matrixmultiply reads nothing from a or b.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.data.as_mut_ptr(),
            c.rs as isize,
            c.cs as isize,
        );
    }
}

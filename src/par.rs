//! A parallel map over a slice with scoped threads: the loader's hot loops
//! use every core without a thread-pool dependency.

use std::num::NonZeroUsize;

/// Threads to use: the machine's parallelism, capped so that small inputs
/// stay on the calling thread.
fn threads_for(len: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    // Below a few dozen items a thread costs more than it saves.
    cores.min(len / 32).max(1)
}

/// `items.iter().map(f).collect()`, in order, on all cores.
pub(crate) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads_for(items.len());
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // A panic in `f` is a bug; carry it to the caller's thread.
                Err(payload) => std::panic::resume_unwind(payload),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order() {
        let items: Vec<usize> = (0..1000).collect();
        assert_eq!(
            super::map(&items, |i| i * 2),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        assert_eq!(super::map(&[1, 2], |i| i + 1), [2, 3]);
        assert!(super::map(&[] as &[u8], |i| *i).is_empty());
    }
}

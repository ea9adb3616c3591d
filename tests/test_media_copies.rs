//! A render with a 5 MB inline image copies the image's bytes once: into
//! the render's inputs, as they are serialized. Checking the media,
//! placing it and counting its tokens share that copy. Counted with a
//! global allocator that notes every allocation of a megabyte or more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LARGE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= 1 << 20 && COUNTING.load(Ordering::Relaxed) {
            LARGE.fetch_add(1, Ordering::Relaxed);
            if std::env::var_os("SHOW_ALLOC").is_some() {
                COUNTING.store(false, Ordering::Relaxed);
                eprintln!(
                    "{} bytes at\n{}",
                    layout.size(),
                    std::backtrace::Backtrace::force_capture()
                );
                COUNTING.store(true, Ordering::Relaxed);
            }
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= 1 << 20 && COUNTING.load(Ordering::Relaxed) {
            LARGE.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_five_megabyte_image_is_copied_once_per_render() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("see.prompt.jinja"),
        "---\nversion: 1.0.0\nparameters:\n  photo: {type: image}\n---\nuser:\nWhat is this?\n{{ photo }}\n",
    )
    .unwrap();
    let registry = promptbook::Registry::load(dir.path()).unwrap();
    let mut png =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x08\0\0\0\x08\0\x08\x06\0\0\0\0\0\0\0".to_vec();
    png.resize(5 << 20, 7);
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let inputs = serde_json::json!({ "photo": url });
    // Once to warm the registry's caches (token counts of the text).
    registry.render("see", &inputs).unwrap();
    LARGE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let r = registry.render("see", &inputs).unwrap();
    COUNTING.store(false, Ordering::Relaxed);
    assert_eq!(
        LARGE.load(Ordering::Relaxed),
        1,
        "large allocations in one render"
    );
    let promptbook::Content::Parts(parts) = &r.messages[0].content else {
        panic!("{:?}", r.messages[0]);
    };
    let media = parts[1].media().unwrap();
    assert_eq!(media.media_type(), Some("image/png"));
    assert_eq!(r.tokens.media[0].width, Some(2048));
}

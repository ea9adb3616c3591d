//! Resource limits on rendering.

/// What one render may cost. Templates come from many authors and inputs
/// from end users: these bound the work, memory and nesting a render can
/// take, so that a hostile or buggy template or input fails with an
/// [`ErrorKind::Limit`](crate::ErrorKind::Limit) error naming the limit,
/// quickly, and the registry keeps serving.
///
/// Set them with [`Registry::with_limits`](crate::Registry::with_limits)
/// (or [`WatchedRegistry::set_limits`](crate::WatchedRegistry::set_limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenderLimits {
    /// minijinja's fuel: one unit per instruction, plus one per 64 bytes
    /// of strings built and written. `None` turns the budget off. Default
    /// 2,000,000: well under a second of work even in a debug build, and at
    /// most some 128 MB of strings built, while the shipped templates use a
    /// few thousand.
    pub fuel: Option<u64>,
    /// The deepest nesting of macro calls, includes and blocks (minijinja's
    /// recursion limit; at most 500). Default 100, which fits a 2 MiB
    /// thread stack even in a debug build; raise it only with bigger
    /// stacks.
    pub recursion: usize,
    /// The largest rendered template output, in bytes (history spliced in
    /// as data is not counted). Default 8 MiB.
    pub max_output_bytes: usize,
    /// The largest input document, in bytes of string data plus 8 per
    /// value. Default 32 MiB.
    pub max_input_bytes: usize,
    /// The deepest nesting of the inputs (objects and arrays). Default 64.
    pub max_input_depth: usize,
    /// The largest image, file or audio value (a media parameter, or a
    /// part of a history message), in decoded bytes. Default 20 MiB,
    /// OpenAI's limit for one image (Anthropic takes 5 MB per image).
    pub max_media_bytes: usize,
}

impl Default for RenderLimits {
    fn default() -> RenderLimits {
        RenderLimits {
            fuel: Some(2_000_000),
            recursion: 100,
            max_output_bytes: 8 << 20,
            max_input_bytes: 32 << 20,
            max_input_depth: 64,
            max_media_bytes: crate::media::DEFAULT_MAX_MEDIA_BYTES,
        }
    }
}

impl RenderLimits {
    /// The defaults.
    pub fn new() -> RenderLimits {
        RenderLimits::default()
    }

    /// Sets the fuel budget (`None`: unlimited).
    pub fn fuel(mut self, fuel: Option<u64>) -> RenderLimits {
        self.fuel = fuel;
        self
    }

    /// Sets the recursion limit (capped at 500).
    pub fn recursion(mut self, depth: usize) -> RenderLimits {
        self.recursion = depth.min(500);
        self
    }

    /// Sets the largest rendered output.
    pub fn max_output_bytes(mut self, bytes: usize) -> RenderLimits {
        self.max_output_bytes = bytes;
        self
    }

    /// Sets the largest input document.
    pub fn max_input_bytes(mut self, bytes: usize) -> RenderLimits {
        self.max_input_bytes = bytes;
        self
    }

    /// Sets the largest media value (decoded bytes).
    pub fn max_media_bytes(mut self, bytes: usize) -> RenderLimits {
        self.max_media_bytes = bytes;
        self
    }

    /// Sets the deepest input nesting.
    pub fn max_input_depth(mut self, depth: usize) -> RenderLimits {
        self.max_input_depth = depth;
        self
    }
}

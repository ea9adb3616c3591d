//! Counts a file's tokens in one process, N times, and prints the fastest
//! run in seconds and the count: the Rust side of the paired rounds in
//! `benches/compare_tiktoken.py`. `count_file ENCODING FILE [N]`.

use std::time::Instant;

use promptbook::tokens::Encoding;

fn main() {
    let mut args = std::env::args().skip(1);
    let encoding = match args.next().as_deref() {
        Some("o200k_base") => Encoding::O200kBase,
        Some("cl100k_base") => Encoding::Cl100kBase,
        other => panic!("unknown encoding {other:?} (o200k_base or cl100k_base)"),
    };
    let path = args.next().expect("a file to count");
    let n: usize = args.next().map_or(3, |s| s.parse().expect("a count"));
    let text = std::fs::read_to_string(path).expect("a readable UTF-8 file");
    let _ = encoding.count("warm up"); // load the tables
    let mut best = f64::INFINITY;
    let mut tokens = 0;
    for _ in 0..n {
        let t = Instant::now();
        tokens = std::hint::black_box(encoding.count(std::hint::black_box(&text)));
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{best} {tokens}");
}

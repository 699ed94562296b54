//! The `keyturn` binary: parse the command line and hand over to the library.

/// mimalloc instead of glibc's malloc: serving a cached document is mostly allocating and
/// freeing small request buffers, and mimalloc's thread-local free lists do that without the
/// arena locks (measured in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keyturn::cli::main()
}

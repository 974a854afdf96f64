//! `profile-api`: see `profile-api --help`.

/// mimalloc rather than glibc's allocator, whose `malloc`, `free` and chunk consolidation
/// took 7–8 % of the CPU under the `mixed` load: with it a PATCH costs 6 % fewer
/// instructions and a cached GET 5 % fewer, for some more resident memory (BENCHMARKS.md;
/// the caches' budget is checked under this allocator, adapters/cache-moka/tests).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    profile_api::run()
}

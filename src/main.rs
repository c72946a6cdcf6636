//! The `paperclip` command; all logic lives in the library and the `cli` module.

mod cli;

/// mimalloc keeps freed memory for reuse where the system allocator returns large blocks
/// to the kernel: a CLIP training step frees and allocates hundreds of megabytes of
/// tensors, and with glibc's allocator a third of a step went to page faults.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}

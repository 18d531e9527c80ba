//! The io_uring runtime: ring, operations that own their buffers, executor. The only
//! module where `unsafe` is allowed.

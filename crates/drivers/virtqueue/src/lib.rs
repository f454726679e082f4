#![forbid(unsafe_code)]
//! (placeholder, being written)

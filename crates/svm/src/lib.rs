//! Software virtual memory (to be written).

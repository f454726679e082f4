//! Twin derivation (to be written).

//! The append-only span log (to be written).

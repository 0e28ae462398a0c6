//! The loader (loader issue).

//! The streaming worker (server issue).

//! The HTTP server (server issue).

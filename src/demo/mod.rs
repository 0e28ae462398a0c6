//! The demo: synthetic users and the streaming worker that keeps some of
//! their features fresh. Only the demo names demo features; the store, the
//! loader and the server's API work with whatever features they are given.

pub mod synth;
pub mod worker;

//! Request routing (in progress).

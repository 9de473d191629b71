//! MySQL client/server protocol, as a pass-through proxy observes it (see docs/architecture.md).

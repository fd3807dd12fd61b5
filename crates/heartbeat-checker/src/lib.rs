//! The heartbeat checker (in progress).

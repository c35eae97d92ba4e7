//! biolatency: not written yet

//! socketlatency: not written yet

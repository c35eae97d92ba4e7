//! tcpreset: not written yet

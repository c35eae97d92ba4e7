//! flow: not written yet

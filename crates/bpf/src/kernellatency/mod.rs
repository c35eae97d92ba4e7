//! kernellatency: not written yet

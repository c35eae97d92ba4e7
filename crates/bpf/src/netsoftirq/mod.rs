//! netsoftirq: not written yet

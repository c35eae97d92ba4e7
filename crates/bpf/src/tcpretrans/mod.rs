//! tcpretrans: not written yet

//! The result of one diagnosis (path graph + findings). Owned by the diagnose work; in progress.

//! netiftxlat: not written yet

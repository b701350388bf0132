//! TEMPORARY stub (the exit-reflect branch replaces this file).

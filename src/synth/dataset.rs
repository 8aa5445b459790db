//! Data-set trees. (stub)

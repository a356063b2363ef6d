//! ferrolb lab and e2e support (see README).

//! ferrolb speaker (see README).

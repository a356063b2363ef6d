//! ferrolb speaker (see README).

pub mod packet;

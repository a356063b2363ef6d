//! ferrolb speaker (see README).

pub mod election;
pub mod packet;

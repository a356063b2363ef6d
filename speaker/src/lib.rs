//! ferrolb speaker (see README).

pub mod election;
pub mod membership;
pub mod packet;

//! ferrolb speaker (see README).

pub mod announce;
pub mod election;
pub mod membership;
pub mod packet;

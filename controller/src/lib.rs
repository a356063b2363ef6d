//! ferrolb controller (see README).

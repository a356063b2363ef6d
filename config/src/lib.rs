//! ferrolb configuration model.

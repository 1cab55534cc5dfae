//! The xDS resources in force, assembled with the bootstrap's static ones into one config.

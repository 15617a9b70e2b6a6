//! Helpers shared by the end-to-end tests: locating tools and binaries, starting processes.

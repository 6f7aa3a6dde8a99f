//! Tools around the hub, not the hub itself: a fake LLM server (`mock`), a load generator
//! (`bench`), the event fan-out probe (`fanout`, `bench --subscribers`) and the entry points of the fuzz targets (`fuzzing`, reached through
//! [`crate::internals`]).

#[cfg(feature = "tools")]
pub mod bench;
#[cfg(feature = "tools")]
pub mod fanout;
pub mod fuzzing;
#[cfg(feature = "tools")]
pub mod mock;

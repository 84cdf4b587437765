//! Integration tests against real PostgreSQL clusters. One binary, modules
//! per area, one shared harness.

mod harness;
mod objstore;

mod archive;
mod archive_async;
mod bad_input;
mod change_tracking;
mod contrib;
mod core;
mod crash;
mod delta;
mod drill;
mod encryption;
mod expire;
mod hostile;
mod incremental;
mod integrity;
mod layers;
mod libpq;
mod matrix;
mod pitr;
mod remote;
mod standby;
mod store_contract;
mod upgrade;
mod walblocks;

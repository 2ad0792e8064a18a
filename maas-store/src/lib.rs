//! maas-store: the `maas_core::Store` on sea-orm (SQLite, PostgreSQL, MySQL/MariaDB).
//!
//! Not built yet: this crate is a placeholder in the workspace layout until issue 4 lands.
//! Until then the only `Store` is maas-core's in-memory reference store.

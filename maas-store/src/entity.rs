//! sea-orm entities, one module per table of [`crate::schema`], named after the table
//! without its `maas_` prefix. Columns keep the database's types (ids as UUID text, times
//! as epoch milliseconds, JSON as text); `rows` converts them to maas-core's records.
//!
//! The store uses them where sea-orm's query builder says the same thing on every backend
//! (registry and audit reads); claims, completions and upserts are hand-written per
//! backend (see ../shared/STACK.md for what sea-orm does not emit). `tests/schema.rs`
//! reads every entity from a freshly migrated database on every backend, so an entity and
//! its migration cannot drift apart.

pub mod hosts {
    //! `maas_hosts`: A host of the inventory.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_hosts")]
    pub struct Model {
        /// `hostname`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub hostname: String,
        /// `site`.
        pub site: String,
        /// `rack`.
        pub rack: Option<String>,
        /// `pool`.
        pub pool: String,
        /// `owner_group`.
        pub owner_group: Option<String>,
        /// `sku`.
        pub sku: String,
        /// `bmc_address`.
        pub bmc_address: String,
        /// `bmc_port`.
        pub bmc_port: i64,
        /// `bmc_credentials_ref`.
        pub bmc_credentials_ref: String,
        /// `state`.
        pub state: String,
        /// `mac` (migration m0002).
        pub mac: Option<String>,
        /// `allocated_to` (migration m0003).
        pub allocated_to: Option<String>,
        /// `state_since` (migration m0003).
        pub state_since: Option<i64>,
        /// `bmc_protocol` (migration m0004).
        pub bmc_protocol: String,
        /// `bmc_system_id` (migration m0004).
        pub bmc_system_id: Option<String>,
        /// `bmc_tls` (migration m0004): the spec, `NULL` to verify.
        pub bmc_tls: Option<String>,
        /// `boot_method` (migration m0004).
        pub boot_method: String,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod batches {
    //! `maas_batches`: A batch: its spec (JSON) and its host-run counters.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_batches")]
    pub struct Model {
        /// `id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `submitter`.
        pub submitter: String,
        /// `idempotency_key`.
        pub idempotency_key: Option<String>,
        /// `fingerprint`.
        pub fingerprint: String,
        /// `action`.
        pub action: String,
        /// `spec`.
        pub spec: String,
        /// `state`.
        pub state: String,
        /// `pause_reason`.
        pub pause_reason: Option<String>,
        /// `cancel_reason`.
        pub cancel_reason: Option<String>,
        /// `queued`.
        pub queued: i64,
        /// `running`.
        pub running: i64,
        /// `succeeded`.
        pub succeeded: i64,
        /// `failed`.
        pub failed: i64,
        /// `cancelled`.
        pub cancelled: i64,
        /// `created_at`.
        pub created_at: i64,
        /// `updated_at`.
        pub updated_at: i64,
        /// `finished_at`.
        pub finished_at: Option<i64>,
        /// `pools` (migration m0003): comma-separated, sorted.
        pub pools: Option<String>,
        /// `rolled_up` (migration m0003): folded into the rollups (0 or 1).
        pub rolled_up: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod host_runs {
    //! `maas_host_runs`: One host's run within a batch.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_host_runs")]
    pub struct Model {
        /// `id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `batch_id`.
        pub batch_id: String,
        /// `ordinal`.
        pub ordinal: i64,
        /// `hostname`.
        pub hostname: String,
        /// `site`.
        pub site: String,
        /// `pool`.
        pub pool: String,
        /// `sku`.
        pub sku: String,
        /// `state`.
        pub state: String,
        /// `step`.
        pub step: i64,
        /// `cancel_requested`.
        pub cancel_requested: bool,
        /// `started_at`.
        pub started_at: Option<i64>,
        /// `finished_at`.
        pub finished_at: Option<i64>,
        /// `last_error`.
        pub last_error: Option<String>,
        /// `straggler_step`.
        pub straggler_step: Option<i64>,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod jobs {
    //! `maas_jobs`: One step of a host run's chain. (MySQL/MariaDB add the generated `ready_site`, which is never written.)
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_jobs")]
    pub struct Model {
        /// `id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `batch_id`.
        pub batch_id: String,
        /// `host_run_id`.
        pub host_run_id: String,
        /// `hostname`.
        pub hostname: String,
        /// `site`.
        pub site: String,
        /// `position`.
        pub position: i64,
        /// `kind`.
        pub kind: String,
        /// `params`.
        pub params: String,
        /// `state`.
        pub state: String,
        /// `attempt`.
        pub attempt: i64,
        /// `max_attempts`.
        pub max_attempts: i64,
        /// `priority`.
        pub priority: String,
        /// `queue_key`.
        pub queue_key: i64,
        /// `run_at`.
        pub run_at: i64,
        /// `lease_owner`.
        pub lease_owner: Option<String>,
        /// `lease_expires_at`.
        pub lease_expires_at: Option<i64>,
        /// `wait_token`.
        pub wait_token: Option<String>,
        /// `wait_deadline`.
        pub wait_deadline: Option<i64>,
        /// `created_at`.
        pub created_at: i64,
        /// `enqueued_at`.
        pub enqueued_at: Option<i64>,
        /// `started_at`.
        pub started_at: Option<i64>,
        /// `finished_at`.
        pub finished_at: Option<i64>,
        /// `last_error`.
        pub last_error: Option<String>,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod claims {
    //! `maas_claims`: A host held by an unfinished host run (unique per host: the overlap rule).
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_claims")]
    pub struct Model {
        /// `hostname`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub hostname: String,
        /// `batch_id`.
        pub batch_id: String,
        /// `host_run_id`.
        pub host_run_id: String,
        /// `since`.
        pub since: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox_seq {
    //! `maas_outbox_seq`: The single row whose counter numbers events in commit order.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_outbox_seq")]
    pub struct Model {
        /// `id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        /// `seq`.
        pub seq: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod events {
    //! `maas_events`: An outbox event.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_events")]
    pub struct Model {
        /// `seq`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        /// `batch_id`.
        pub batch_id: String,
        /// `at`.
        pub at: i64,
        /// `kind`.
        pub kind: String,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cursors {
    //! `maas_cursors`: How far an outbox consumer has read.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_cursors")]
    pub struct Model {
        /// `consumer`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        /// `seq`.
        pub seq: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_log {
    //! `maas_audit_log`: An audit entry (one per mutating call, accepted or refused).
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_audit_log")]
    pub struct Model {
        /// `id`.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// `at`.
        pub at: i64,
        /// `principal`.
        pub principal: String,
        /// `op`.
        pub op: String,
        /// `accepted` (0 or 1).
        pub accepted: i64,
        /// `batch_id`.
        pub batch_id: Option<String>,
        /// `action` (JSON).
        pub action: Option<String>,
        /// `host_count`.
        pub host_count: i64,
        /// `hosts`.
        pub hosts: String,
        /// `summary`.
        pub summary: String,
        /// `reason`.
        pub reason: Option<String>,
        /// `forced` (0 or 1).
        pub forced: i64,
        /// `comment`.
        pub comment: Option<String>,
        /// `error`.
        pub error: Option<String>,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod leaders {
    //! `maas_leaders`: A leader lease.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_leaders")]
    pub struct Model {
        /// `name`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// `owner`.
        pub owner: String,
        /// `expires_at`.
        pub expires_at: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod pool_kinds {
    //! `maas_pool_kinds`: The step kinds a pool's workers take (JSON list).
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_pool_kinds")]
    pub struct Model {
        /// `pool`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub pool: String,
        /// `kinds`.
        pub kinds: String,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workers {
    //! `maas_workers`: A worker's registration and heartbeat.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_workers")]
    pub struct Model {
        /// `id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `site`.
        pub site: String,
        /// `pool`.
        pub pool: String,
        /// `started_at`.
        pub started_at: i64,
        /// `last_heartbeat`.
        pub last_heartbeat: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tickets {
    //! `maas_tickets`: A ticket raised for people (`host` is '' for batch-level tickets).
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_tickets")]
    pub struct Model {
        /// `id`.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// `kind`.
        pub kind: String,
        /// `batch_id`.
        pub batch_id: String,
        /// `host`.
        pub host: String,
        /// `step`.
        pub step: Option<String>,
        /// `summary`.
        pub summary: String,
        /// `at`.
        pub at: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rollups {
    //! `maas_rollups`: One day's host runs (or steps) of an action, site, SKU and image.
    use sea_orm::entity::prelude::*;

    /// A row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "maas_rollups")]
    pub struct Model {
        /// `day` (UTC midnight, epoch ms).
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: i64,
        /// `action`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub action: String,
        /// `site`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub site: String,
        /// `sku`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku: String,
        /// `image` (empty but for reimages).
        #[sea_orm(primary_key, auto_increment = false)]
        pub image: String,
        /// `step` (empty: whole host runs).
        #[sea_orm(primary_key, auto_increment = false)]
        pub step: String,
        /// `succeeded`.
        pub succeeded: i64,
        /// `failed`.
        pub failed: i64,
        /// `cancelled`.
        pub cancelled: i64,
        /// `durations` (a JSON histogram).
        pub durations: String,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

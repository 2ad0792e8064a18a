//! The seams: one small trait per concern, each with a written contract. Shells and
//! backends implement them; the engine only ever sees these traits.

pub mod inventory;
pub mod power;
pub mod services;
pub mod store;

pub use inventory::{HostFilter, Inventory};
pub use power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerReport, PowerState, ProbeReport};
pub use services::{
    Credentials, ImageSummary, Notifier, NotifyError, PreparedBoot, ProvisionError, Provisioner, Secrets, SecretsError,
    Ticket, TicketKind, Ticketing, TicketingError,
};
pub use store::*;

//! The Rust client of the schedules API, mirroring the documented Python API's `PolosClient` and `schedules`.
//!
//! It sends plain NATS requests to the micro service `polos`, so validation lives in one place
//! (the service) and Rust programs see exactly what other languages see.
//!
//! ```no_run
//! # async fn f() -> Result<(), polos::client::ClientError> {
//! use polos::{schedules, PolosClient};
//!
//! let client = PolosClient::from_env().await?;
//! let schedule_id = schedules::create(
//!     &client,
//!     "user-reminder",
//!     "0 8 * * *",
//!     "America/Los_Angeles",
//!     "user_123",
//! )
//! .await?;
//! println!("Created schedule: {schedule_id}");
//! # Ok(()) }
//! ```

mod env;
mod error;
mod main_error;
mod polos_client;
pub mod runs;
pub mod schedules;

pub use env::connect_from_env;
pub use error::ClientError;
pub use main_error::MainError;
pub use polos_client::{PolosClient, DEFAULT_REQUEST_TIMEOUT};

//! The rules of bourse, free of I/O so that they can be tested exhaustively and shared by every
//! adapter (SQL, MQTT, HTTP) without dragging those adapters along.

pub mod analysis;
pub mod money;
pub mod tick;
pub mod validation;

pub use analysis::{Analysis, NewAnalysis, TargetType};
pub use money::Price;
pub use tick::{Tick, TickError};
pub use validation::{FieldError, ValidationErrors};

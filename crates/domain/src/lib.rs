//! The rules of bourse, free of I/O so that they can be tested exhaustively and shared by every
//! adapter (SQL, MQTT, HTTP) without dragging those adapters along.

pub mod analysis;
pub mod bar;
pub mod bar_csv;
pub mod indicators;
pub mod money;
pub mod order;
pub mod registration;
pub mod resample;
pub mod rollup;
pub mod tick;
pub mod validation;

pub use analysis::{Analysis, NewAnalysis, TargetType};
pub use bar::{Bar, BarError, Ohlcv, SeriesKind};
pub use indicators::{Indicator, IndicatorError, IndicatorSeries};
pub use money::Price;
pub use registration::Registration;
pub use resample::{
    resample, resample_anchored, Bin, Frequency, Resample, ResampleError, ResampledBar,
};
pub use tick::{Tick, TickError};
pub use validation::{FieldError, ValidationErrors};

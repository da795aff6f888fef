//! The rules of bourse, free of I/O so that they can be tested exhaustively and shared by every
//! adapter (SQL, MQTT, HTTP) without dragging those adapters along.
//!
//! Main types: [`Tick`] (a feed message, parsed or refused with a [`TickError`] reason),
//! [`Analysis`] and its target-hit rule, [`order::NewOrder`] (an order that cannot be invalid),
//! [`Price`] (exact decimals), [`Bar`] and [`bar_csv`] (OHLCV rows), [`resample()`] with
//! [`Resample`] and [`Frequency`], [`Indicator`] (SMA, EMA, RSI, MACD, Bollinger, VWAP, as TA-Lib
//! computes them), and [`ValidationErrors`] (one entry per bad field, the API's 422 body).
//!
//! ```
//! use bourse_domain::{bar_csv::parse_csv, resample, Frequency, Resample, Tick};
//!
//! // A feed message becomes a typed tick, or a reason to set it aside.
//! let message = br#"{"stock_id": "6ffb8e62-92c1-40c7-9d38-5b976a346b62", "name": "CIB",
//!                    "price": 28, "availability": 46, "timestamp": "2019-12-15 14:36:33"}"#;
//! let tick = Tick::parse(message, chrono::Utc::now()).unwrap();
//! assert_eq!((tick.name.as_str(), tick.price.to_string().as_str()), ("CIB", "28"));
//!
//! // CSV rows become bars, and bars resample into years.
//! let csv = "symbol,date,open,high,low,close,volume\n\
//!            AMZN,2021-12-30,170,171,169,170.5,100\n\
//!            AMZN,2021-12-31,170.5,172,168,171,50\n";
//! let bars: Vec<_> = parse_csv(csv).map(|(_line, bar)| bar.unwrap()).collect();
//! let years = resample(&bars, Resample::every(Frequency::Annual));
//! assert_eq!(years.len(), 1);
//! assert_eq!((years[0].high.to_string(), years[0].volume), ("172".to_string(), 150));
//! ```

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
pub use bar::{Bar, BarError, Ohlcv, SeriesBar, SeriesKind};
pub use indicators::{Indicator, IndicatorError, IndicatorSeries};
pub use money::Price;
pub use registration::Registration;
pub use resample::{
    resample, resample_anchored, Bin, Frequency, Resample, ResampleError, ResampledBar,
};
pub use tick::{Tick, TickError, TickLimits};
pub use validation::{FieldError, ValidationErrors};

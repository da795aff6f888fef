//! A simulated market: each stock's price follows a geometric random walk (log-normal steps, so
//! prices stay positive and move in proportion to their level, like real quotes) rounded to the
//! cent, and its availability a bounded integer walk. Used by `bourse streamer` and by the
//! embedded in-process feed.

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

/// The demo stocks: CIB with the feed API's example id, then Edita and Hamada Inc.
const DEFAULT_STOCKS: [(&str, &str, f64); 3] = [
    ("6ffb8e62-92c1-40c7-9d38-5b976a346b62", "CIB", 28.0),
    ("b5a1d3c2-6f0e-4c3a-9a51-1f2c3d4e5f60", "Edita", 19.5),
    ("e2f4a6b8-0c1d-4e2f-8a3b-5c6d7e8f9a0b", "Hamada Inc", 7.4),
];

#[derive(Debug, Clone)]
pub struct SimStock {
    pub stock_id: Uuid,
    pub name: String,
    price: f64,
    availability: i64,
    /// Timestamps of one stock strictly increase, so no two ticks collide on the store's
    /// `(stock_id, timestamp)` key (which would make the second a duplicate).
    last: Option<DateTime<Utc>>,
}

pub struct Market {
    stocks: Vec<SimStock>,
    rng: StdRng,
    step: Normal<f64>,
    next: usize,
}

impl Market {
    /// `count` stocks: the three demo stocks first, then `STK004`, `STK005`, … with stable ids.
    pub fn new(count: usize, seed: Option<u64>) -> Market {
        let mut rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let stocks = (0..count)
            .map(|i| match DEFAULT_STOCKS.get(i) {
                Some((id, name, price)) => SimStock {
                    stock_id: Uuid::parse_str(id)
                        .unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())),
                    name: (*name).to_string(),
                    price: *price,
                    availability: rng.gen_range(20..200),
                    last: None,
                },
                None => {
                    let name = format!("STK{:03}", i + 1);
                    SimStock {
                        stock_id: Uuid::new_v5(
                            &Uuid::NAMESPACE_OID,
                            format!("bourse:{name}").as_bytes(),
                        ),
                        name,
                        price: rng.gen_range(5.0..200.0),
                        availability: rng.gen_range(20..200),
                        last: None,
                    }
                }
            })
            .collect();
        // 0.4% volatility per tick: visible movement every few seconds at demo rates.
        let step = Normal::new(0.0, 0.004).unwrap_or_else(|_| unreachable!("valid parameters"));
        Market {
            stocks,
            rng,
            step,
            next: 0,
        }
    }

    /// The share of a `count`-stock market that publisher `part` of `parts` owns: every stock
    /// belongs to exactly one publisher, so parallel publishers never walk the same stock twice.
    pub fn part(count: usize, seed: Option<u64>, part: usize, parts: usize) -> Market {
        let mut market = Market::new(count, seed);
        let parts = parts.max(1);
        let mut index = 0;
        market.stocks.retain(|_| {
            index += 1;
            (index - 1) % parts == part
        });
        market
    }

    pub fn stocks(&self) -> &[SimStock] {
        &self.stocks
    }

    /// Advances the next stock (round robin) and returns its tick as the feed's JSON message.
    pub fn next_message(&mut self, now: DateTime<Utc>) -> Vec<u8> {
        let i = self.next % self.stocks.len().max(1);
        self.next = self.next.wrapping_add(1);
        let Some(s) = self.stocks.get_mut(i) else {
            return Vec::new();
        };
        let z: f64 = self.step.sample(&mut self.rng);
        s.price = (s.price * z.exp()).max(0.01);
        s.availability = (s.availability + self.rng.gen_range(-3..=3)).clamp(0, 1000);
        let now = match s.last {
            Some(last) if now <= last => last + chrono::TimeDelta::microseconds(1),
            _ => now,
        };
        s.last = Some(now);
        let price = Decimal::from_f64(s.price)
            .map(|d| d.round_dp(2))
            .and_then(|d| d.to_f64())
            .unwrap_or(s.price);
        json!({
            "stock_id": s.stock_id,
            "name": s.name,
            "price": price,
            "availability": s.availability,
            "timestamp": now.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_domain::Tick;

    #[test]
    fn messages_parse_as_ticks_and_walk() {
        let mut m = Market::new(5, Some(7));
        assert_eq!(m.stocks()[0].name, "CIB");
        assert_eq!(m.stocks()[2].name, "Hamada Inc");
        assert_eq!(m.stocks()[4].name, "STK005");
        let mut prices = Vec::new();
        for _ in 0..500 {
            let msg = m.next_message(Utc::now());
            let t = Tick::parse(&msg, Utc::now()).expect("simulated ticks are valid");
            if t.name == "CIB" {
                prices.push(t.price);
                assert!(t.price.scale() <= 2, "cents: {}", t.price);
            }
        }
        assert_eq!(prices.len(), 100);
        let distinct: std::collections::HashSet<_> = prices.iter().collect();
        assert!(distinct.len() > 10, "the price moves");
        let first = prices[0];
        let max_step = prices
            .windows(2)
            .map(|w| ((w[1] - w[0]) / w[0]).abs())
            .max()
            .unwrap();
        assert!(
            max_step < Decimal::new(5, 2),
            "a random walk, not noise: step {max_step} at {first}"
        );
    }

    #[test]
    fn timestamps_of_a_stock_strictly_increase() {
        let mut m = Market::new(1, Some(3));
        let now = Utc::now();
        let stamps: Vec<_> = (0..3)
            .map(|_| Tick::parse(&m.next_message(now), now).unwrap().timestamp)
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    }

    #[test]
    fn parts_split_the_stocks() {
        let all = Market::new(10, Some(1));
        let ids = |m: &Market| m.stocks().iter().map(|s| s.stock_id).collect::<Vec<_>>();
        let mut joined: Vec<_> = (0..3)
            .flat_map(|p| ids(&Market::part(10, Some(1), p, 3)))
            .collect();
        assert_eq!(Market::part(10, Some(1), 0, 3).stocks().len(), 4);
        joined.sort();
        let mut expected = ids(&all);
        expected.sort();
        assert_eq!(joined, expected);
    }

    #[test]
    fn ids_are_stable() {
        let a = Market::new(4, Some(1));
        let b = Market::new(4, Some(2));
        let ids = |m: &Market| m.stocks().iter().map(|s| s.stock_id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
    }
}

//! Seeded synthetic users and streaming events, with the value ranges of
//! the reference demos, so a demo or a benchmark has realistic rows.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::value::{FeatureMap, FeatureValue};

pub const BATCH_FEATURES: [&str; 6] = [
    "country_iso",
    "risk_segment",
    "account_age_days",
    "tx_count_7d",
    "avg_amount_30d",
    "chargeback_count_180d",
];

pub const STREAMING_FEATURES: [&str; 5] = [
    "last_login_ts",
    "last_device_id",
    "tx_count_5m",
    "failed_logins_15m",
    "session_country",
];

const COUNTRIES: [&str; 12] = [
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "BR", "IN", "JP", "CA",
];
const RISK_SEGMENTS: [(&str, u32); 3] = [("low", 70), ("medium", 24), ("high", 6)];
const CHARGEBACKS: [(i64, u32); 4] = [(0, 88), (1, 8), (2, 3), (3, 1)];
const FAILED_LOGINS: [(i64, u32); 5] = [(0, 80), (1, 10), (2, 5), (3, 3), (5, 2)];
const DEVICE_KINDS: [&str; 3] = ["ios", "android", "web"];

/// The demo's entity ids: `u0001`, `u0002`, ... (1-based, at least 4 digits).
pub fn user_id(n: usize) -> String {
    let mut id = String::with_capacity(8);
    push_user_id(&mut id, n);
    id
}

/// Appends `user_id(n)` to `out`.
pub fn push_user_id(out: &mut String, n: usize) {
    out.push('u');
    crate::value::push_digits(out, n as u64, 4);
}

/// `count` users `u0001..`, the same rows for the same seed.
pub fn users(count: usize, seed: u64) -> impl Iterator<Item = (String, FeatureMap)> {
    let mut rng = rng(seed);
    (1..=count).map(move |n| (user_id(n), batch_features(&mut rng)))
}

/// The generator `users` draws from for `seed`: `BatchDraw::draw` on it,
/// once per user, gives the same users.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// One user's six batch features.
pub fn batch_features(rng: &mut impl Rng) -> FeatureMap {
    BatchDraw::draw(rng)
        .fields()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_value()))
        .collect()
}

/// One user's six batch features as drawn, before they are named: what a
/// writer that lays rows out itself (the loader) takes, instead of a map
/// of freshly allocated names and strings per user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchDraw {
    country_iso: &'static str,
    risk_segment: &'static str,
    account_age_days: i64,
    tx_count_7d: i64,
    avg_amount_30d: f64,
    chargeback_count_180d: i64,
}

/// One drawn value, its text borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Drawn {
    Str(&'static str),
    Int(i64),
    Float(f64),
}

impl Drawn {
    pub fn to_value(self) -> FeatureValue {
        match self {
            Drawn::Str(s) => FeatureValue::Str(s.to_owned()),
            Drawn::Int(i) => FeatureValue::Int(i),
            Drawn::Float(x) => FeatureValue::Float(x),
        }
    }
}

impl BatchDraw {
    /// The next user's features from `rng` (the draws `users` makes).
    pub fn draw(rng: &mut impl Rng) -> BatchDraw {
        // In this order: the same seed gives the same users as ever.
        let country_iso = pick(rng, &COUNTRIES);
        let risk_segment = weighted(rng, &RISK_SEGMENTS);
        let account_age_days = rng.gen_range(7..=2400);
        let tx_count_7d = rng.gen_range(0..=80);
        let avg_amount_30d = (rng.gen_range(5.0..350.0f64) * 100.0).round() / 100.0;
        let chargeback_count_180d = weighted(rng, &CHARGEBACKS);
        BatchDraw {
            country_iso,
            risk_segment,
            account_age_days,
            tx_count_7d,
            avg_amount_30d,
            chargeback_count_180d,
        }
    }

    /// The features by name, in name order (a `FeatureMap`'s order).
    pub fn fields(&self) -> [(&'static str, Drawn); 6] {
        [
            ("account_age_days", Drawn::Int(self.account_age_days)),
            ("avg_amount_30d", Drawn::Float(self.avg_amount_30d)),
            (
                "chargeback_count_180d",
                Drawn::Int(self.chargeback_count_180d),
            ),
            ("country_iso", Drawn::Str(self.country_iso)),
            ("risk_segment", Drawn::Str(self.risk_segment)),
            ("tx_count_7d", Drawn::Int(self.tx_count_7d)),
        ]
    }
}

/// One streaming update: the five streaming features as of `now_ms`.
pub fn streaming_features(rng: &mut impl Rng, now_ms: i64) -> FeatureMap {
    let mut f = FeatureMap::new();
    f.insert("last_login_ts".into(), FeatureValue::Int(now_ms));
    let device = format!(
        "{}-{:04x}",
        pick(rng, &DEVICE_KINDS),
        rng.gen_range(0..0x1_0000u32)
    );
    f.insert("last_device_id".into(), FeatureValue::Str(device));
    f.insert(
        "tx_count_5m".into(),
        FeatureValue::Int(rng.gen_range(0..=12)),
    );
    f.insert(
        "failed_logins_15m".into(),
        FeatureValue::Int(weighted(rng, &FAILED_LOGINS)),
    );
    f.insert("session_country".into(), pick(rng, &COUNTRIES).into());
    f
}

fn pick<'a>(rng: &mut impl Rng, items: &[&'a str]) -> &'a str {
    items[rng.gen_range(0..items.len())]
}

fn weighted<T: Copy>(rng: &mut impl Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total);
    for (item, w) in items {
        if roll < *w {
            return *item;
        }
        roll -= w;
    }
    items[items.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_rows() {
        let a: Vec<_> = users(50, 7).collect();
        let b: Vec<_> = users(50, 7).collect();
        let c: Vec<_> = users(50, 8).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a[0].0, "u0001");
        assert_eq!(a[49].0, "u0050");
        assert_eq!(user_id(12345), "u12345");
    }

    #[test]
    fn values_in_range() {
        for (_, f) in users(2000, 1) {
            assert_eq!(f.len(), BATCH_FEATURES.len());
            for name in BATCH_FEATURES {
                assert!(f.contains_key(name), "{name}");
            }
            let FeatureValue::Int(age) = f["account_age_days"] else {
                panic!()
            };
            assert!((7..=2400).contains(&age));
            let FeatureValue::Int(tx) = f["tx_count_7d"] else {
                panic!()
            };
            assert!((0..=80).contains(&tx));
            let FeatureValue::Float(amt) = f["avg_amount_30d"] else {
                panic!()
            };
            assert!((5.0..=350.0).contains(&amt));
            let seg = f["risk_segment"].encode();
            assert!(["low", "medium", "high"].contains(&seg.as_str()));
        }
    }

    /// The batch features as they were first drawn, into a map directly.
    fn drawn_into_a_map(rng: &mut impl Rng) -> FeatureMap {
        let mut f = FeatureMap::new();
        f.insert("country_iso".into(), pick(rng, &COUNTRIES).into());
        f.insert("risk_segment".into(), weighted(rng, &RISK_SEGMENTS).into());
        f.insert(
            "account_age_days".into(),
            FeatureValue::Int(rng.gen_range(7..=2400)),
        );
        f.insert(
            "tx_count_7d".into(),
            FeatureValue::Int(rng.gen_range(0..=80)),
        );
        let amount = (rng.gen_range(5.0..350.0f64) * 100.0).round() / 100.0;
        f.insert("avg_amount_30d".into(), FeatureValue::Float(amount));
        f.insert(
            "chargeback_count_180d".into(),
            FeatureValue::Int(weighted(rng, &CHARGEBACKS)),
        );
        f
    }

    #[test]
    fn a_seed_gives_the_users_it_always_gave() {
        for seed in [0, 1, 7, 42] {
            let mut rng = StdRng::seed_from_u64(seed);
            let want: Vec<_> = (1..=3000)
                .map(|n| (format!("u{n:04}"), drawn_into_a_map(&mut rng)))
                .collect();
            let got: Vec<_> = users(3000, seed).collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn drawn_fields_are_in_name_order_and_are_the_batch_features() {
        let mut rng = StdRng::seed_from_u64(9);
        let fields = BatchDraw::draw(&mut rng).fields();
        let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        let mut sorted = BATCH_FEATURES.to_vec();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn user_ids_are_zero_padded_to_four_digits() {
        for (n, want) in [
            (0, "u0000"),
            (1, "u0001"),
            (999, "u0999"),
            (1000, "u1000"),
            (12345, "u12345"),
        ] {
            assert_eq!(user_id(n), want);
        }
        for n in (0..20_000).chain([usize::MAX]) {
            assert_eq!(user_id(n), format!("u{n:04}"));
        }
    }

    #[test]
    fn streaming_event_has_every_streaming_feature() {
        let mut rng = StdRng::seed_from_u64(3);
        let f = streaming_features(&mut rng, 1_716_998_413_541);
        assert_eq!(f.keys().map(String::as_str).collect::<Vec<_>>(), {
            let mut v = STREAMING_FEATURES.to_vec();
            v.sort();
            v
        });
        assert_eq!(f["last_login_ts"], FeatureValue::Int(1_716_998_413_541));
    }
}
